"""web-service: a FastAPI app; `web-service` serves it with uvicorn on $HOST:$PORT."""

import os
import sys

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root() -> dict:
    return {"message": "hello from pyimage", "python": f"{sys.version_info.major}.{sys.version_info.minor}"}


@app.get("/health")
def health() -> dict:
    return {"ok": True}


def main() -> None:
    import uvicorn

    uvicorn.run(app, host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "8000")), log_level="info")

"""hello-cli: prints a greeting and a few facts about where it runs."""

import sys

import attrs
import humanize


@attrs.frozen
class Greeting:
    name: str

    def text(self) -> str:
        return f"hello, {self.name}"


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "world"
    print(Greeting(name).text())
    print(f"python {sys.version_info.major}.{sys.version_info.minor} at {sys.executable}")
    print(f"{humanize.naturalsize(123456789)} is a natural size")

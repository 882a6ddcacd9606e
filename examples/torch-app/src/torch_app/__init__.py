"""torch-app: fits y = 3x + 2 with torch on the CPU and prints what it learned."""

import numpy as np
import torch


def main() -> None:
    torch.manual_seed(0)
    x = torch.from_numpy(np.linspace(-1, 1, 64, dtype=np.float32)).unsqueeze(1)
    y = 3 * x + 2
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    w, b = model.weight.item(), model.bias.item()
    print(f"torch {torch.__version__.split('+')[0]} numpy {np.__version__}")
    print(f"learned w={w:.2f} b={b:.2f}")

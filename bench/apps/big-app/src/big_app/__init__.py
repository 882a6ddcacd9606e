"""A data app that imports the heavy stack: what bench/run.py's big-app builds (issue #14)."""

import sys


def main() -> int:
    import matplotlib
    import pandas as pd
    import sklearn

    frame = pd.DataFrame({"x": [1, 2, 3]})
    print(f"pandas {pd.__version__}, scikit-learn {sklearn.__version__}, matplotlib {matplotlib.__version__}: {int(frame.x.sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

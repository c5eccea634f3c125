"""``python -m gateway``: run one gateway until SIGINT/SIGTERM."""

from gateway.service import Gateway
from runtime.service import main

if __name__ == "__main__":
    main("gateway", Gateway)

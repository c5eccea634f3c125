"""``python -m router``: run one router replica until SIGINT/SIGTERM."""

from router.service import Router
from runtime.service import main

if __name__ == "__main__":
    main("router", Router, metrics_port="router_port")

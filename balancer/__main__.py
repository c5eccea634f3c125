"""``python -m balancer``: run one balancer until SIGINT/SIGTERM."""

from balancer.service import Balancer
from runtime.service import main

if __name__ == "__main__":
    main("balancer", Balancer)

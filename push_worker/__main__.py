"""``python -m push_worker``: run the push worker until SIGINT/SIGTERM."""

from push_worker.service import PushWorker
from runtime.service import main

if __name__ == "__main__":
    main("push_worker", PushWorker, metrics_port="push_port")

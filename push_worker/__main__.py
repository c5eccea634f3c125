"""``python -m push_worker``: run the push worker until SIGINT/SIGTERM."""

from push_worker.service import PushWorker
from runtime.config import load_config_or_exit
from runtime.logging import configure_logging
from runtime.metrics import serve_metrics
from runtime.service import run


def main() -> None:
    config = load_config_or_exit()
    configure_logging(config.log, "push_worker")
    serve_metrics(config.metrics.host, config.metrics.push_port)
    run(PushWorker(config))


if __name__ == "__main__":
    main()

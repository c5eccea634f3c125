"""``python -m router``: run one router replica until SIGINT/SIGTERM."""

from router.service import Router
from runtime.config import load_config_or_exit
from runtime.logging import configure_logging
from runtime.metrics import serve_metrics
from runtime.service import run


def main() -> None:
    config = load_config_or_exit()
    configure_logging(config.log, "router")
    serve_metrics(config.metrics.host, config.metrics.router_port)
    run(Router(config))


if __name__ == "__main__":
    main()

"""``python -m gateway``: run one gateway until SIGINT/SIGTERM."""

from gateway.service import Gateway
from runtime.config import load_config_or_exit
from runtime.logging import configure_logging
from runtime.service import run


def main() -> None:
    config = load_config_or_exit()
    configure_logging(config.log, "gateway")
    run(Gateway(config))


if __name__ == "__main__":
    main()

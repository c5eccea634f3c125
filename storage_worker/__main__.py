"""``python -m storage_worker``: run the storage worker until SIGINT/SIGTERM."""

from runtime.config import Config
from runtime.service import main
from storage_worker.service import StorageWorker
from storage_worker.store.base import retention_policy
from storage_worker.store.factory import create_store


def build(config: Config) -> StorageWorker:
    store = create_store(config.store, retention_policy(config.retention),
                         default_app=config.app, partitions=config.partitions.count)
    return StorageWorker(config, store)


if __name__ == "__main__":
    main("storage_worker", build, metrics_port="storage_port")

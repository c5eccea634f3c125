"""Run a real single-node Apache Cassandra 5.0 (from Maven Central, on JDK 17) for tests and dev.

``fetch()`` downloads the server classpath once with Maven into a cache directory and trains a
class-data-sharing (CDS) archive that cuts JVM start-up by about 40 %. ``CassandraNode`` starts
one node on loopback as a child process, waits until CQL answers, and stops it by its PID.

Command line::

    python -m infra.cassandra_node fetch
    python -m infra.cassandra_node run --data-dir DIR [--port 9042]
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Self

from cassandra import ProtocolVersion
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import WhiteListRoundRobinPolicy

from infra.processes import terminate

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = Path(__file__).resolve().parent / "cassandra"
POM_FILE = ASSETS_DIR / "pom.xml"
YAML_TEMPLATE = ASSETS_DIR / "cassandra.yaml.tmpl"
LOGBACK_FILE = ASSETS_DIR / "logback.xml"

READY_LINE = "Starting listening for CQL clients"
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
FETCH_MARKER = ".fetched"
CLASS_ARCHIVE = "classes.jsa"
MAVEN_TIMEOUT_S = 1800.0
STOP_GRACE_S = 30.0
LOG_TAIL_LINES = 40

# Cassandra's conf/jvm17-server.options: JDK 17 module exports/opens the server needs.
JDK17_MODULE_FLAGS: tuple[str, ...] = (
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.management/com.sun.jmx.remote.security=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
)

# Cassandra's jvm-server.options / jvm17-server.options, sized for 2 cores, plus start-up and
# shutdown shortcuts that are safe for a single seed node.
JVM_FLAGS: tuple[str, ...] = (
    "-ea",
    "-da:net.openhft...",
    "-XX:+UseThreadPriorities",
    "-XX:+HeapDumpOnOutOfMemoryError",
    "-XX:+ExitOnOutOfMemoryError",
    "-Xss256k",
    "-XX:+UseTLAB",
    "-XX:+ResizeTLAB",
    "-XX:+PerfDisableSharedMem",
    "-Djava.net.preferIPv4Stack=true",
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:G1HeapRegionSize=16m",
    "-XX:G1RSetUpdatingPauseTimePercent=5",
    "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70",
    "-XX:ParallelGCThreads=2",
    "-XX:ConcGCThreads=1",
    "-Djdk.attach.allowAttachSelf=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
    "-Dcassandra-foreground=yes",
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.ring_delay_ms=1000",
    "-Dcassandra.shutdown_announce_in_ms=0",
    "-Dcassandra.size_recorder_interval=0",
    "-Dcassandra.memtable_row_overhead_computation_step=1000",
)

# The class archive is trained with the jamm agent loaded, which JDK 17 only allows with these.
ARCHIVE_UNLOCK_FLAGS: tuple[str, ...] = (
    "-XX:+UnlockDiagnosticVMOptions",
    "-XX:+AllowArchivingWithJavaAgent",
)

# Root may mlockall() the whole heap: ~1 s of start-up and 1 GB pinned. Dropping CAP_IPC_LOCK
# makes Cassandra fall back to its "Unable to lock JVM memory" warning instead.
NO_MLOCK_PREFIX: tuple[str, ...] = ("setpriv", "--bounding-set=-ipc_lock")

HEAP_PATTERN = re.compile(r"[1-9][0-9]*[kKmMgG]")

_live_nodes: set[CassandraNode] = set()


def ring_token(index: int, size: int) -> int:
    """The ``initial_token`` of node ``index`` (0-based) of a ``size``-node ring with one token
    each (Murmur3Partitioner): evenly spaced, so each node owns an equal range."""
    if not 0 <= index < size:
        raise ValueError(f"node index {index} outside a ring of {size}")
    return (2**64 // size) * index - 2**63


class CassandraError(RuntimeError):
    """Cassandra could not be fetched, started or reached."""


def default_cache_dir() -> Path:
    """Return ``$CASSANDRA_CACHE_DIR`` or ``<repo>/.cache/cassandra``."""
    configured = os.environ.get("CASSANDRA_CACHE_DIR")
    return Path(configured) if configured else REPO_ROOT / ".cache" / "cassandra"


def cassandra_version() -> str:
    """Return the cassandra-all version pinned in ``pom.xml``."""
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(POM_FILE).findtext("m:properties/m:cassandra.version", namespaces=namespace)
    if not version:
        raise CassandraError(f"{POM_FILE} has no <cassandra.version> property")
    return version


def fetch(cache_dir: Path | None = None) -> Path:
    """Download the Cassandra classpath (once) and return its lib directory.

    Runs Maven into ``<cache_dir>/cassandra-<version>-<pom hash>/lib`` and trains a class
    archive beside it. A marker file makes later calls instant; a file lock makes concurrent
    calls (e.g. pytest-xdist workers) wait for the first one.
    """
    install_dir = _install_dir(cache_dir or default_cache_dir())
    lib_dir = install_dir / "lib"
    marker = install_dir / FETCH_MARKER
    if marker.exists():
        return lib_dir
    install_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(install_dir / ".lock"):
        if not marker.exists():
            started = time.monotonic()
            _maven_copy_dependencies(lib_dir)
            _build_class_archive(lib_dir, install_dir / CLASS_ARCHIVE)
            marker.write_text(cassandra_version() + "\n")
            logger.info(
                "fetched Cassandra into %s in %.1f s", install_dir, time.monotonic() - started
            )
    return lib_dir


def _install_dir(cache_dir: Path) -> Path:
    """Cache subdirectory keyed by version and pom content, so a pom change refetches."""
    pom_hash = hashlib.sha256(POM_FILE.read_bytes()).hexdigest()[:8]
    return cache_dir.resolve() / f"cassandra-{cassandra_version()}-{pom_hash}"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` for the duration of the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _maven_copy_dependencies(lib_dir: Path) -> None:
    """Copy cassandra-all and its runtime dependencies into ``lib_dir`` via Maven."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise CassandraError("Maven ('mvn') is not on PATH; it is needed to fetch Cassandra")
    partial = lib_dir.with_name(lib_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(lib_dir, ignore_errors=True)
    command = [mvn, "-B", "-q", "-f", str(POM_FILE), "package", f"-Dcassandra.lib.dir={partial}"]
    logger.info("fetching Cassandra %s with Maven into %s", cassandra_version(), lib_dir)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise CassandraError(f"Maven did not finish within {MAVEN_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        output = _tail((result.stdout + result.stderr).splitlines())
        raise CassandraError(f"Maven failed (exit {result.returncode}):\n{output}")
    if not any(partial.glob("cassandra-all-*.jar")):
        raise CassandraError(f"Maven succeeded but {partial} holds no cassandra-all jar")
    partial.rename(lib_dir)


def _build_class_archive(lib_dir: Path, archive: Path) -> None:
    """Train a dynamic CDS archive by running one node through a small CQL workload.

    Failure only costs start-up speed, so it is logged and swallowed.
    """
    partial = archive.with_name(archive.name + ".partial")
    archive.unlink(missing_ok=True)
    partial.unlink(missing_ok=True)
    dump_flags = (*ARCHIVE_UNLOCK_FLAGS, f"-XX:ArchiveClassesAtExit={partial}")
    logger.info("training the JVM class archive %s", archive)
    try:
        with tempfile.TemporaryDirectory(prefix="cassandra-cds-") as tmp:
            with CassandraNode(Path(tmp), lib_dir=lib_dir, jvm_options=dump_flags) as node:
                _exercise(node)
    except CassandraError as exc:
        logger.warning("no class archive, Cassandra will start slower: %s", exc)
        return
    if partial.exists():
        partial.rename(archive)
    else:
        logger.warning("the JVM wrote no class archive; Cassandra will start slower")


def _exercise(node: CassandraNode) -> None:
    """Run the schema, write and read paths once so their classes get archived."""
    with node.session() as session:
        session.execute(
            "CREATE KEYSPACE warmup WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute("CREATE TABLE warmup.t (k text, c timeuuid, v blob, PRIMARY KEY (k, c))")
        insert = session.prepare("INSERT INTO warmup.t (k, c, v) VALUES (?, now(), ?)")
        session.execute(insert, ("k", b"v"))
        session.execute("SELECT * FROM warmup.t WHERE k = 'k' LIMIT 10")


def _find_java() -> str:
    """Return ``$JAVA_HOME/bin/java`` or the ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise CassandraError("no 'java' on PATH and no JAVA_HOME: install JDK 17")
    return java


@cache
def _no_mlock_prefix() -> tuple[str, ...]:
    """Command prefix that drops CAP_IPC_LOCK, if running as root and ``setpriv`` works here."""
    if os.geteuid() != 0 or shutil.which(NO_MLOCK_PREFIX[0]) is None:
        return ()
    probe = subprocess.run([*NO_MLOCK_PREFIX, "true"], capture_output=True, check=False)
    return NO_MLOCK_PREFIX if probe.returncode == 0 else ()


def _free_port(host: str, exclude: set[int]) -> int:
    """Ask the kernel for a free TCP port on ``host`` that is not in ``exclude``."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port


def _port_is_free(host: str, port: int) -> bool:
    """Whether a listener could bind ``host:port`` (with SO_REUSEADDR, as Cassandra does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _tail(lines: Sequence[str], count: int = LOG_TAIL_LINES) -> str:
    """Join the last ``count`` lines."""
    return "\n".join(lines[-count:])


def _read_text(path: Path, offset: int = 0) -> str:
    """Text of ``path`` from byte ``offset`` on, or '' if it does not exist yet."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _open_cluster(host: str, port: int, timeout: float) -> Cluster:
    """A driver Cluster that talks to exactly ``host:port``."""
    profile = ExecutionProfile(
        load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=timeout
    )
    return Cluster(
        contact_points=[host],
        port=port,
        protocol_version=ProtocolVersion.V5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=timeout,
        control_connection_timeout=timeout,
    )


def _query_release_version(host: str, port: int, timeout: float) -> str:
    """Connect with cassandra-driver and return ``release_version`` from ``system.local``."""
    cluster = _open_cluster(host, port, timeout)
    try:
        row = cluster.connect().execute("SELECT release_version FROM system.local").one()
    finally:
        cluster.shutdown()
    return str(row.release_version)


class CassandraNode:
    """One Cassandra 5.0 node on loopback, run as a child process of this Python process.

    Data, commit log, configuration and logs live under ``data_dir``; starting again with the
    same ``data_dir`` (``stop()`` then ``start()``, or ``pause()``/``resume()``) brings the node
    back on the same ports with its data. ``lib_dir`` defaults to ``fetch()``'s default cache;
    ``jvm_options`` are appended after the built-in JVM flags.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        native_port: int | None = None,
        storage_port: int | None = None,
        heap: str = "1G",
        lib_dir: Path | None = None,
        jvm_options: Sequence[str] = (),
        seeds: Sequence[str] = (),
        initial_token: int = 0,
    ) -> None:
        """Configure the node; ports left as None are picked free now. Nothing is started.

        Alone by default (its own seed, token 0); a node of a cluster gets the seeds'
        ``host:storage_port`` and its own ``initial_token`` (``ring_token``)."""
        if not HEAP_PATTERN.fullmatch(heap):
            raise ValueError(f"heap must look like '1G' or '768M', got {heap!r}")
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.native_port = native_port or _free_port(host, {storage_port or 0})
        self.storage_port = storage_port or _free_port(host, {self.native_port})
        if self.native_port == self.storage_port:
            raise ValueError(f"native and storage port must differ, both are {self.native_port}")
        self.heap = heap
        self.seeds = tuple(seeds) or (f"{host}:{self.storage_port}",)
        self.initial_token = initial_token
        self.lib_dir = lib_dir
        self.jvm_options = tuple(jvm_options)
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def contact_point(self) -> str:
        """``host:port`` of the CQL native transport."""
        return f"{self.host}:{self.native_port}"

    @property
    def log_dir(self) -> Path:
        """Directory holding ``system.log`` (INFO) and ``stdout.log`` (JVM output, WARN)."""
        return self.data_dir / "logs"

    @property
    def system_log(self) -> Path:
        """Cassandra's INFO log."""
        return self.log_dir / "system.log"

    @property
    def pid(self) -> int | None:
        """PID of the running JVM, or None when stopped."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    @property
    def is_running(self) -> bool:
        """Whether the JVM this object started is still alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Launch the JVM in the background; call ``wait_ready()`` before using it."""
        if self.is_running:
            raise CassandraError(f"Cassandra is already running (pid {self.pid})")
        self._close_stdout()
        lib_dir = self.lib_dir or fetch()
        self._check_ports_free()
        config = self._write_config()
        self._log_offset = self.system_log.stat().st_size if self.system_log.exists() else 0
        command = self._command(lib_dir, config)
        self._stdout = (self.log_dir / "stdout.log").open("ab")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
        )
        _live_nodes.add(self)
        logger.info(
            "started Cassandra pid %d on %s (data %s)",
            self._process.pid,
            self.contact_point,
            self.data_dir,
        )

    def wait_ready(self, timeout: float = 240.0) -> str:
        """Block until the log says CQL is listening and a driver query works; return the version.

        Raises CassandraError, with the tail of the logs, if the JVM exits or ``timeout`` passes.
        """
        if self._process is None:
            raise CassandraError("Cassandra was not started")
        deadline = time.monotonic() + timeout
        last_error = "the log has not said it listens for CQL clients yet"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise self._failure(
                    f"Cassandra exited with code {self._process.returncode} during start-up"
                )
            if READY_LINE in _read_text(self.system_log, self._log_offset):
                try:
                    return _query_release_version(self.host, self.native_port, timeout=5.0)
                except Exception as exc:  # any driver error means "not ready yet"
                    last_error = f"CQL query failed: {exc!r}"
            time.sleep(0.2)
        raise self._failure(f"Cassandra was not ready within {timeout:.0f} s ({last_error})")

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the JVM this object started (it drains, flushes), SIGKILL after ``grace`` s."""
        process = self._process
        if process is not None and process.poll() is None:
            if terminate(process, grace):
                logger.warning("Cassandra pid %d ignored SIGTERM for %.0f s, killed it",
                               process.pid, grace)
            logger.info("stopped Cassandra pid %d (exit %s)", process.pid, process.returncode)
        _live_nodes.discard(self)
        self._close_stdout()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the JVM exits (or ``timeout`` passes); return its exit code or None."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def pause(self) -> None:
        """Stop the node but keep its data dir and ports for ``resume()``."""
        self.stop()

    def resume(self, timeout: float = 240.0) -> str:
        """Start the node again on the same ports and data and wait until CQL works."""
        self.start()
        return self.wait_ready(timeout)

    @contextmanager
    def session(self, keyspace: str | None = None, timeout: float = 30.0) -> Iterator[Session]:
        """A cassandra-driver session to this node, shut down when the block ends."""
        cluster = _open_cluster(self.host, self.native_port, timeout)
        try:
            yield cluster.connect(keyspace)
        finally:
            cluster.shutdown()

    def __enter__(self) -> Self:
        """Start and wait until ready; stop again if that fails."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the node."""
        self.stop()

    def __repr__(self) -> str:
        """Show where the node listens and whether it runs."""
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return (
            f"CassandraNode({self.contact_point}, storage {self.storage_port}, {state}, "
            f"{self.data_dir})"
        )

    def _check_ports_free(self) -> None:
        """Fail early with a clear message if either port is taken."""
        for name, port in (("native", self.native_port), ("storage", self.storage_port)):
            if not _port_is_free(self.host, port):
                raise CassandraError(f"{name} port {self.host}:{port} is already in use")

    def _write_config(self) -> Path:
        """Create the node's directories and render ``cassandra.yaml``; return its path."""
        directories = {
            name: self.data_dir / sub
            for name, sub in (
                ("data_file_directory", "data"),
                ("commitlog_directory", "commitlog"),
                ("saved_caches_directory", "saved_caches"),
                ("hints_directory", "hints"),
                ("cdc_raw_directory", "cdc_raw"),
            )
        }
        for directory in (*directories.values(), self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        values = {name: json.dumps(str(path)) for name, path in directories.items()}
        rendered = string.Template(YAML_TEMPLATE.read_text()).substitute(
            values, host=self.host, storage_port=self.storage_port, native_port=self.native_port,
            seeds=",".join(self.seeds), initial_token=self.initial_token,
        )
        config = self.data_dir / "cassandra.yaml"
        config.write_text(rendered)
        return config

    def _command(self, lib_dir: Path, config: Path) -> list[str]:
        """The full JVM command line."""
        jars = sorted(lib_dir.glob("*.jar"))
        jamm = next((jar for jar in jars if jar.name.startswith("jamm-")), None)
        if jamm is None:
            raise CassandraError(f"{lib_dir} holds no jamm jar: is it a fetch() lib directory?")
        archive = lib_dir.parent / CLASS_ARCHIVE
        archive_flags = (
            (*ARCHIVE_UNLOCK_FLAGS, f"-XX:SharedArchiveFile={archive}") if archive.exists() else ()
        )
        return [
            *_no_mlock_prefix(),
            _find_java(),
            *JDK17_MODULE_FLAGS,
            *JVM_FLAGS,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            f"-XX:HeapDumpPath={self.log_dir}",
            f"-javaagent:{jamm}",
            *archive_flags,
            *self.jvm_options,
            f"-Dcassandra.config={config.as_uri()}",
            f"-Dcassandra.storagedir={self.data_dir}",
            f"-Dcassandra.logdir={self.log_dir}",
            f"-Dlogback.configurationFile={LOGBACK_FILE}",
            "-cp",
            os.pathsep.join(str(jar) for jar in jars),
            MAIN_CLASS,
        ]

    def _failure(self, message: str) -> CassandraError:
        """A CassandraError carrying the tails of system.log and the JVM's stdout."""
        system_log = _tail(_read_text(self.system_log, self._log_offset).splitlines())
        stdout = _tail(_read_text(self.log_dir / "stdout.log").splitlines())
        return CassandraError(
            f"{message}\n--- {self.system_log} (tail) ---\n{system_log}\n"
            f"--- {self.log_dir / 'stdout.log'} (tail) ---\n{stdout}"
        )

    def _close_stdout(self) -> None:
        """Close our handle on the JVM's stdout log."""
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None


@atexit.register
def _stop_live_nodes() -> None:
    """Do not leave JVMs behind when the interpreter exits without calling ``stop()``."""
    for node in list(_live_nodes):
        node.stop()


class _Shutdown(BaseException):
    """Raised by the CLI's SIGINT/SIGTERM handler to leave the foreground wait."""


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    """Signal handler: turn SIGINT/SIGTERM into an exception in the main thread."""
    raise _Shutdown(signal.Signals(signum).name)


def _port(value: str) -> int:
    """argparse type for a TCP port number."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {port}")
    return port


def _heap(value: str) -> str:
    """argparse type for a JVM heap size such as 1G or 768M."""
    if not HEAP_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"heap must look like 1G or 768M, got {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m infra.cassandra_node`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.cassandra_node", description="Run a real single-node Cassandra."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download Cassandra into the cache and exit")
    fetch_parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default: $CASSANDRA_CACHE_DIR or .cache/cassandra",
    )
    run_parser = commands.add_parser(
        "run", help="run one node in the foreground until SIGINT/SIGTERM"
    )
    run_parser.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        help="node data, config and logs (kept between runs)",
    )
    run_parser.add_argument("--port", type=_port, default=9042, help="CQL port (default 9042)")
    run_parser.add_argument(
        "--storage-port", type=_port, default=None, help="internode port (default: a free one)"
    )
    run_parser.add_argument(
        "--heap", type=_heap, default="1G", help="JVM heap, e.g. 1G or 768M (default 1G)"
    )
    run_parser.add_argument(
        "--timeout", type=float, default=240.0, help="seconds to wait for CQL (default 240)"
    )
    run_parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default: $CASSANDRA_CACHE_DIR or .cache/cassandra",
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    """Start a node, report readiness, and keep it up until a signal or its own exit."""
    node = CassandraNode(
        args.data_dir,
        native_port=args.port,
        storage_port=args.storage_port,
        heap=args.heap,
        lib_dir=fetch(args.cache_dir),
    )
    previous = {sig: signal.signal(sig, _raise_shutdown) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        node.start()
        version = node.wait_ready(args.timeout)
        logger.info("Cassandra %s ready, logs in %s", version, node.log_dir)
        print(f"CQL ready on {node.contact_point}", flush=True)
        code = node.wait()
        logger.error("Cassandra exited by itself with code %s; see %s", code, node.system_log)
        return 1
    except _Shutdown as exc:
        logger.info("%s received, shutting Cassandra down", exc)
        return 0
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        node.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "fetch":
            print(fetch(args.cache_dir), flush=True)
            return 0
        return _run(args)
    except CassandraError as exc:
        logger.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())

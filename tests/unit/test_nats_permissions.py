"""The NATS permission table (``schemas.nats_permissions``) as data: who may publish and
subscribe what, the server config and docs table generated from it, the credential files."""

import re
import stat
from pathlib import Path

import pytest

from infra.nats_auth import (
    SERVER_CONFIG,
    TABLE_END,
    TABLE_START,
    NatsCredentials,
    main,
    permissions_table,
)
from runtime.nkey import user_public_key
from schemas import nats_permissions as perms
from schemas.nats_permissions import (
    ADMIN,
    CREDENTIALS,
    GATEWAY,
    SERVICE,
    STORAGE,
    may_publish,
    may_subscribe,
    subject_matches,
)

NAMES = [credential.name for credential in CREDENTIALS]


def holders(check: object, subject: str) -> set[str]:
    return {name for name in NAMES if check(name, subject)}  # type: ignore[operator]


@pytest.mark.parametrize(("pattern", "subject", "matches"), [
    ("msgs.chat", "msgs.chat", True), ("msgs.*", "msgs.chat", True),
    ("msgs.*", "msgs.chat.x", False), ("msgs.>", "msgs.chat.x", True), ("msgs.>", "msgs", False),
    ("dlv.*", "dlv", False), ("store.rpc.*", "store.rpc.sync", True),
    ("_INBOX.gateway.>", "_INBOX.router.abc", False),
    ("dlv.*", "dlv.>", False), ("dlv.*", "dlv.*", True), ("dlv.>", "dlv.*", True),
    ("dlv.x", "dlv.*", False),
])
def test_subject_matching(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


def test_only_gateways_publish_client_envelopes_and_read_deliveries() -> None:
    for partition in (0, 3, 255):
        for kind in ("chat", "receipt", "notify", "attach"):
            assert holders(may_publish, f"msgs.{partition}.{kind}") == {GATEWAY}, kind
        # group writes: the storage worker, and an operator's replay through the gateway
        assert holders(may_publish, f"msgs.{partition}.group") == {GATEWAY, STORAGE}
    # the last hop: routers publish to a gateway, only gateways listen, nobody sees them all
    assert holders(may_subscribe, "edge.gw-8080-abc123") == {GATEWAY}
    assert holders(may_publish, "edge.gw-8080-abc123") == {perms.ROUTER}
    assert holders(may_subscribe, "edge.>") == set()
    assert holders(may_subscribe, "dlv.default.bob-phone") == set()  # the per-device hop is gone


def test_only_the_storage_worker_answers_the_storage_rpc() -> None:
    assert holders(may_subscribe, "store.rpc.sync") == {STORAGE}
    assert holders(may_publish, "store.rpc.sync") == {GATEWAY}  # the router asks for less
    assert may_publish(perms.ROUTER, "store.rpc.get_user")


def test_only_admins_apply_control_and_services_send_notifications() -> None:
    assert holders(may_publish, "control.apply") == {ADMIN}
    assert holders(may_publish, "notify.send") == {SERVICE}
    assert holders(may_subscribe, "control.apply") == holders(may_subscribe, "notify.send") == {
        GATEWAY}
    assert not may_subscribe(SERVICE, "edge.gw-8080-abc123")
    assert may_subscribe(SERVICE, "callback.upload_logs")


def test_replies_go_only_to_the_callers_inboxes() -> None:
    for credential in CREDENTIALS:
        own = f"_INBOX.{credential.name}.x"
        assert may_subscribe(credential.name, own)
        others = {name for name in NAMES if name != credential.name and may_subscribe(
            name, own)}
        assert not others, f"{others} read {credential.name}'s replies"
        assert not may_subscribe(credential.name, "_INBOX.x")
    assert may_publish(STORAGE, "_INBOX.gateway.x") and may_publish(STORAGE, "_INBOX.router.x")
    assert not may_publish(STORAGE, "_INBOX.service.x")
    assert may_publish(GATEWAY, "_INBOX.service.x") and may_publish(GATEWAY, "_INBOX.admin.x")
    assert not may_publish(GATEWAY, "_INBOX.router.x")


def test_only_stream_owners_change_stream_configuration() -> None:
    for stream in ("MSGS_0", "MSGS_15", "MSGS_255"):
        assert holders(may_publish, f"$JS.API.STREAM.UPDATE.{stream}") == {STORAGE}
        assert not any(may_publish(name, f"$JS.API.STREAM.DELETE.{stream}") for name in NAMES)
        assert not any(may_publish(name, f"$JS.API.STREAM.PURGE.{stream}") for name in NAMES)
    assert holders(may_publish, "$JS.API.STREAM.UPDATE.PUSH") == {perms.PUSH}
    # the partition templates are expanded, never granted as a wildcard over every stream
    assert not may_publish(STORAGE, "$JS.API.STREAM.UPDATE.PUSH")
    assert not may_publish(STORAGE, "$JS.API.STREAM.UPDATE.MSGS_256")


def test_each_worker_consumes_every_partition_under_its_own_name_only() -> None:
    for partition in (0, 255):
        stream = f"MSGS_{partition}"
        assert may_publish(perms.ROUTER, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.router")
        assert may_publish(perms.ROUTER, f"$JS.API.CONSUMER.DELETE.{stream}.router")
        assert not may_publish(perms.ROUTER, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.storage")
        assert not may_publish(perms.ROUTER, f"$JS.API.CONSUMER.DELETE.{stream}.storage")
        assert may_publish(STORAGE, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.storage")
        assert not may_publish(GATEWAY, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.router")


def test_a_service_writes_only_its_own_leases() -> None:
    """Before, both held write on the whole ``leases`` bucket: a compromised router could
    take or drop a storage worker's partitions."""
    assert may_publish(perms.ROUTER, "$KV.leases.lease.router.3")
    assert may_publish(perms.ROUTER, "$KV.leases.member.router.r-1")
    assert not may_publish(perms.ROUTER, "$KV.leases.lease.storage.3")
    assert not may_publish(perms.ROUTER, "$KV.leases.member.storage.s-1")
    assert may_publish(STORAGE, "$KV.leases.lease.storage.3")
    assert not may_publish(STORAGE, "$KV.leases.lease.router.3")
    assert holders(may_publish, "$KV.leases.lease.storage.3") == {STORAGE}
    # operators see who holds what, and change nothing
    assert may_publish(ADMIN, "$JS.API.DIRECT.GET.KV_leases.$KV.leases.lease.router.3")
    assert not may_publish(ADMIN, "$KV.leases.lease.router.3")


def test_the_docs_table_is_generated_from_the_permissions() -> None:
    text = Path("docs/nats-subjects.md").read_text()
    found = re.search(re.escape(TABLE_START) + "\n(.*?)" + re.escape(TABLE_END), text, re.S)
    assert found, "docs/nats-subjects.md lacks the permissions table markers"
    assert found.group(1) == permissions_table(), (
        "regenerate: python -m infra.nats_auth doc docs/nats-subjects.md")


def test_credentials_are_private_files_kept_across_starts(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    first = NatsCredentials.ensure(directory)
    seeds = {name: first.seed_file(name).read_bytes() for name in NAMES}
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in NAMES:
        assert stat.S_IMODE(first.seed_file(name).stat().st_mode) == 0o600
        assert seeds[name].startswith(b"SU")
    again = NatsCredentials.ensure(directory)
    assert {name: again.seed_file(name).read_bytes() for name in NAMES} == seeds
    server = again.authorization()
    for seed in seeds.values():
        assert user_public_key(seed) in server
        assert seed.strip().decode() not in server  # the server holds public keys only
    assert again.env(GATEWAY) == {"COURIER_NATS_NKEY_SEED_FILE": str(directory / "gateway.nk")}
    with pytest.raises(KeyError):
        again.seed_file("root")


def test_the_generate_command_writes_seeds_and_the_server_config(tmp_path: Path) -> None:
    assert main(["generate", str(tmp_path / "nats")]) == 0
    config = (tmp_path / "nats" / SERVER_CONFIG).read_text()
    seeds = sorted(path.name for path in (tmp_path / "nats").glob("*.nk"))
    assert seeds == sorted(f"{name}.nk" for name in NAMES)
    assert config == NatsCredentials(tmp_path / "nats").authorization()
    for seed in (tmp_path / "nats").glob("*.nk"):
        assert seed.read_text().strip() not in config


def test_the_doc_command_rewrites_only_between_its_markers(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{TABLE_START}\nstale\n{TABLE_END}\nafter\n")
    assert main(["doc", str(doc)]) == 0
    assert doc.read_text() == f"before\n{TABLE_START}\n{permissions_table()}{TABLE_END}\nafter\n"
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        main(["doc", str(doc)])


@pytest.mark.parametrize("argv", [[], ["generate"], ["destroy", "x"], ["doc"]])
def test_the_command_refuses_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2

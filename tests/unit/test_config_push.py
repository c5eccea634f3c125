"""Configuration of push, notifications, control and callbacks: parsed, validated, errors
that name the key."""

import pytest

from runtime.config import ConfigError, load_config

SNS = {"COURIER_PUSH_PROVIDERS": "fcm=sns,apns=sns", "COURIER_PUSH_SNS_FCM_ARN": "arn:fcm",
       "COURIER_PUSH_SNS_APNS_ARN": "arn:apns"}
HOOK = {"COURIER_PUSH_DEFAULT_PROVIDER": "webhook", "COURIER_PUSH_WEBHOOK_URL": "https://h/p",
        "COURIER_PUSH_WEBHOOK_SECRET": "w" * 32}


def test_defaults_send_every_platform_to_the_log() -> None:
    config = load_config({})
    assert config.push.default_provider == "log" and config.push.providers == {}
    assert config.callbacks.handlers == [] and config.notify.max_batch == 500
    assert config.auth.admin_secret == "" and config.metrics.push_port == 9103


def test_routing_and_lists_parse() -> None:
    config = load_config({**SNS, **HOOK, "COURIER_CALLBACKS_HANDLERS": "upload_logs, report",
                          "COURIER_PUSH_COLLAPSE_WINDOW_S": "0.5",
                          "COURIER_CONTROL_AUDIT_MAX_AGE_DAYS": "30",
                          "COURIER_AUTH_ADMIN_SECRET": "a" * 32,
                          "COURIER_AUTH_SERVICE_SECRET": "s" * 32})
    assert config.push.providers == {"fcm": "sns", "apns": "sns"}
    assert config.callbacks.handlers == ["upload_logs", "report"]
    assert config.push.collapse_window_s == 0.5 and config.control.audit_max_age_days == 30


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"COURIER_PUSH_PROVIDERS": "pager=log"}, "COURIER_PUSH_PROVIDERS"),
        ({"COURIER_PUSH_PROVIDERS": "fcm=pigeon"}, "COURIER_PUSH_PROVIDERS"),
        ({"COURIER_PUSH_PROVIDERS": "fcm"}, "COURIER_PUSH_PROVIDERS"),
        ({"COURIER_PUSH_PROVIDERS": "webhook=sns"}, "COURIER_PUSH_PROVIDERS"),
        ({"COURIER_PUSH_PROVIDERS": "fcm=sns"}, "COURIER_PUSH_SNS_FCM_ARN"),
        ({"COURIER_PUSH_DEFAULT_PROVIDER": "carrier-pigeon"}, "COURIER_PUSH_DEFAULT_PROVIDER"),
        ({**HOOK, "COURIER_PUSH_WEBHOOK_URL": "ftp://x"}, "COURIER_PUSH_WEBHOOK_URL"),
        ({**HOOK, "COURIER_PUSH_WEBHOOK_SECRET": "short"}, "COURIER_PUSH_WEBHOOK_SECRET"),
        ({"COURIER_PUSH_COLLAPSE_WINDOW_S": "0"}, "COURIER_PUSH_COLLAPSE_WINDOW_S"),
        ({"COURIER_PUSH_COLLAPSE_WINDOW_S": "20"}, "COURIER_PUSH_COLLAPSE_WINDOW_S"),
        ({"COURIER_PUSH_MAX_ATTEMPTS": "0"}, "COURIER_PUSH_MAX_ATTEMPTS"),
        ({"COURIER_PUSH_RETRY_BASE_S": "10", "COURIER_PUSH_RETRY_MAX_S": "1"},
         "COURIER_PUSH_RETRY_BASE_S"),
        ({"COURIER_PUSH_USER_PER_MINUTE": "-1"}, "COURIER_PUSH_USER_PER_MINUTE"),
        ({"COURIER_PUSH_MAX_IDS": "500"}, "COURIER_PUSH_MAX_IDS"),
        ({"COURIER_PUSH_SNS_ARN": "x"}, "COURIER_PUSH_SNS_ARN"),
        ({"COURIER_NOTIFY_MAX_BATCH": "0"}, "COURIER_NOTIFY_MAX_BATCH"),
        ({"COURIER_NOTIFY_MAX_REQUEST_BYTES": "10"}, "COURIER_NOTIFY_MAX_REQUEST_BYTES"),
        ({"COURIER_CALLBACKS_HANDLERS": "upload.logs"}, "COURIER_CALLBACKS_HANDLERS"),
        ({"COURIER_CALLBACKS_MAX_BODY_BYTES": "0"}, "COURIER_CALLBACKS_MAX_BODY_BYTES"),
        ({"COURIER_CONTROL_AUDIT_MAX_AGE_DAYS": "never"}, "COURIER_CONTROL_AUDIT_MAX_AGE_DAYS"),
        ({"COURIER_AUTH_ADMIN_SECRET": "short"}, "COURIER_AUTH_ADMIN_SECRET"),
        ({"COURIER_AUTH_SERVICE_SECRET": "short"}, "COURIER_AUTH_SERVICE_SECRET"),
        ({"COURIER_AUTH_SERVICE_SECRET": "x" * 32, "COURIER_AUTH_ADMIN_SECRET": "x" * 32},
         "COURIER_AUTH_ADMIN_SECRET"),
        ({"COURIER_METRICS_PUSH_PORT": "70000"}, "COURIER_METRICS_PUSH_PORT"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert str(info.value).startswith(key), str(info.value)

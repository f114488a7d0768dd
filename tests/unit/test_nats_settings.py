"""The services' broker settings: several servers, TLS, a credentials file, replicas."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from nats.js import api as js_api

from schemas import api
from services.common import streams
from services.common.settings import NatsSettings
from services.syncer.settings import SyncerSettings


def test_several_servers_are_one_comma_separated_setting() -> None:
    nats = NatsSettings(url="tls://10.0.0.1:4222, tls://10.0.0.2:4222,,tls://10.0.0.3:4222")
    assert nats.servers == ["tls://10.0.0.1:4222", "tls://10.0.0.2:4222", "tls://10.0.0.3:4222"]


def test_from_the_environment_as_the_manifests_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDBY_SYNCER_NATS__URL", "tls://nats-0.nats:4222,tls://nats-1.nats:4222")
    monkeypatch.setenv("STANDBY_SYNCER_NATS__TLS_CA", "/etc/standby/nats-tls/ca.crt")
    monkeypatch.setenv("STANDBY_SYNCER_NATS__STREAM_REPLICAS", "3")
    nats = SyncerSettings().nats
    assert (len(nats.servers), nats.tls_ca, nats.stream_replicas) == (2, Path("/etc/standby/nats-tls/ca.crt"), 3)


@pytest.mark.parametrize(("fields", "says"), [
    ({"tls_cert": "/c.crt"}, "tls_cert and tls_key go together"),
    ({"credentials_file": "/x.creds", "user": "u"}, "not both"),
    ({"stream_replicas": 0}, "greater than or equal to 1"),
    ({"stream_replicas": 7}, "less than or equal to 5"),
])
def test_settings_that_cannot_work_are_refused_at_start(fields: dict[str, object], says: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=says):
        NatsSettings.model_validate(fields)


def test_tls_is_used_when_a_ca_is_given_or_a_url_asks_for_it() -> None:
    assert streams.tls_context(NatsSettings(url="nats://a:4222")) is None
    assert streams.tls_context(NatsSettings(url="tls://a:4222")) is not None  # the system's CAs


def test_the_replicas_setting_reaches_each_plans_stream() -> None:
    config = streams.stream_config(NatsSettings(stream_replicas=3), "standby-system", "shop", api.History())
    assert config.num_replicas == 3


def test_a_stream_is_updated_only_when_its_configuration_differs() -> None:
    want = streams.stream_config(NatsSettings(), "standby-system", "shop", api.History())
    # As the server answers: enums as strings, durations in nanoseconds, subjects in another order.
    have = js_api.StreamConfig.from_response({**want.as_dict(), "retention": "limits", "storage": "file",
                                              "discard": "old", "subjects": list(reversed(want.subjects or []))})
    assert not streams.differs(have, want)
    assert streams.differs(have, streams.stream_config(NatsSettings(stream_replicas=3), "standby-system", "shop",
                                                       api.History()))
    assert streams.differs(have, streams.stream_config(NatsSettings(), "standby-system", "shop",
                                                       api.History(states_per_object=5)))
    assert streams.differs(have, streams.stream_config(NatsSettings(subject_prefix="other"), "standby-system",
                                                       "shop", api.History()))

"""The host state a clone's GCS takes at negotiation (hcsshim.guest.hoststate): the wire shape, what is reseeded,
and that malformed parts are skipped. Nothing here may set this test host's clock, pool or name: only the parts
that touch the agent's own process are applied for real (a clone's clock, entropy and hostname are checked in
tests/integration/test_uvm_template.py)."""

from __future__ import annotations

import base64
import random
import tempfile

from hcsshim.bridge import messages
from hcsshim.guest import hoststate


def test_host_state_on_the_wire() -> None:
    state = messages.host_state(1_700_000_000_123_456_789, b"\x01\x02\x03", "clone-a")
    assert state == {"UnixNano": 1_700_000_000_123_456_789, "Entropy": base64.b64encode(b"\x01\x02\x03").decode(),
                     "Hostname": "clone-a"}
    body = messages.Requests.negotiate(host_state=state)
    assert body["HostState"] == state and body["MinimumVersion"] <= body["MaximumVersion"]


def test_the_agents_generators_are_reseeded_so_clones_do_not_repeat_the_template() -> None:
    random.seed(42)
    template = random.getstate()
    tempfile.gettempprefix()
    names = tempfile._get_candidate_names()  # the sequence the template had made and seeded
    hoststate.apply({})  # nothing for the clock, the pool or the name: only the agent's own state
    assert random.getstate() != template
    assert tempfile._get_candidate_names() is not names


def test_malformed_parts_are_skipped_not_raised(caplog) -> None:
    hoststate.apply({"UnixNano": "soon", "Entropy": 7, "Hostname": ["x"]})  # wrong types: ignored
    hoststate.apply({"UnixNano": -1, "Entropy": "", "Hostname": ""})  # empty: ignored
    hoststate.apply({"Entropy": "not base64!"})  # fails before any device is opened: logged, skipped
    assert any("cannot add the host's entropy" in r.getMessage() for r in caplog.records)

"""Renamed settings keys: a section refuses its old keys, naming the new one."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError

from ioc.config._base import RENAMED_KEY, Section


class _Timing(Section):
    renamed_keys = {"hold_frames": ("hold_s", "seconds, not frames"),
                    "warmup_frames": ("warmup_s", "seconds, not frames")}

    hold_s: float = Field(1.0, ge=0)
    warmup_s: float = Field(2.0, ge=0)


class _Outer(Section):
    timing: _Timing = Field(default_factory=_Timing)


def test_new_keys_load():
    assert _Outer.model_validate({"timing": {"hold_s": 0.5}}).timing.hold_s == 0.5


def test_old_key_refused_with_new_key_named():
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate({"timing": {"hold_frames": 5}})
    (err,) = info.value.errors()
    assert err["type"] == RENAMED_KEY
    assert err["loc"] == ("timing",)
    assert err["ctx"]["old"] == "hold_frames" and err["ctx"]["new"] == "hold_s"
    assert "'hold_frames'" in err["msg"] and "'hold_s'" in err["msg"]


def test_every_old_key_of_a_section_is_named():
    with pytest.raises(ValidationError) as info:
        _Timing.model_validate({"hold_frames": 5, "warmup_frames": 3})
    msg = info.value.errors()[0]["msg"]
    assert "hold_s" in msg and "warmup_s" in msg


def test_section_without_renames_is_unchanged():
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate({"timing": {"nope": 1}})
    assert info.value.errors()[0]["type"] == "extra_forbidden"

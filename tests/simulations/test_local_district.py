"""`district local` refuses what cannot work before anything is written or started."""

import pytest

from policies.loader import default_policy_path
from simulations.errors import SimulationError
from simulations.local_district import LocalDistrictRequest, build_local_district


def test_one_school_under_a_secure_aggregation_policy_is_refused_up_front(tmp_path):
    with pytest.raises(SimulationError) as info:
        build_local_district(LocalDistrictRequest(out=tmp_path / "d", schools=1))
    assert str(info.value) == (
        f"--schools 1: the policy {default_policy_path()} requires secure aggregation, "
        "which needs at least 2 schools"
    )
    assert not (tmp_path / "d").exists()

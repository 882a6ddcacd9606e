"""The layer planner: which wheel goes into which layer, and why. Pure values in, pure values out."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from pyimage.errors import ConfigError
from pyimage.layers.plan import HeavyGroup, LayerPlan, plan_layers
from pyimage.wheels import Wheel

MB = 1_000_000


def wheel(name: str, size: int = 1 * MB, version: str = "1.0") -> Wheel:
    filename = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    sha256 = hashlib.sha256(filename.encode()).hexdigest()
    return Wheel(name, version, filename, sha256, Path("/wheels") / filename, size)


def names(plan: LayerPlan) -> list[str]:
    return [layer.name for layer in plan.layers]


def contents(plan: LayerPlan) -> dict[str, list[str]]:
    return {layer.name: [w.name for w in layer.wheels] for layer in plan.layers}


def group(*patterns: str, name: str | None = None) -> HeavyGroup:
    return HeavyGroup(name or patterns[0], patterns)


APP = wheel("myapp", 50_000)
NVIDIA = [wheel("nvidia-cublas-cu12", 400 * MB), wheel("nvidia-cudnn-cu12", 700 * MB), wheel("nvidia-nccl-cu12", 200 * MB)]
TORCH = wheel("torch", 800 * MB)
SMALL = [wheel("requests"), wheel("idna"), wheel("certifi"), wheel("urllib3")]


# -- heavy groups ------------------------------------------------------------------------------------------
def test_heavy_glob_groups_nvidia_wheels_into_one_layer() -> None:
    plan = plan_layers([*SMALL, *NVIDIA], APP, [group("nvidia-*")])

    assert contents(plan)["heavy:nvidia-*"] == ["nvidia-cublas-cu12", "nvidia-cudnn-cu12", "nvidia-nccl-cu12"]
    assert not any(w.name.startswith("nvidia-") for w in plan.layers[1].wheels)
    assert names(plan) == ["heavy:nvidia-*", "site-packages", "app"]


def test_named_heavy_package_gets_a_layer_of_its_own_with_the_reason() -> None:
    plan = plan_layers([*SMALL, TORCH], APP, [group("torch")])

    torch_layer = plan.layers[0]
    assert (torch_layer.name, torch_layer.kind, torch_layer.wheels) == ("heavy:torch", "heavy", (TORCH,))
    assert dict(torch_layer.reasons) == {"torch": "named heavy"}


def test_heavy_table_group_shares_one_layer_under_its_name() -> None:
    triton = wheel("triton", 300 * MB)
    cuda = HeavyGroup("cuda", ("nvidia-*", "triton"))

    plan = plan_layers([*SMALL, *NVIDIA, triton, TORCH], APP, [cuda])

    assert contents(plan)["heavy:cuda"] == ["nvidia-cublas-cu12", "nvidia-cudnn-cu12", "nvidia-nccl-cu12", "triton"]
    assert set(dict(plan.layers[0].reasons).values()) == {"named heavy in group 'cuda'"}
    assert "torch" in contents(plan)["site-packages"]


def test_heavy_patterns_are_matched_as_normalized_names() -> None:
    plan = plan_layers([*SMALL, *NVIDIA], APP, [HeavyGroup("gpu", ("Nvidia_CUDNN*", "NVIDIA.nccl-cu12"))])

    assert contents(plan)["heavy:gpu"] == ["nvidia-cudnn-cu12", "nvidia-nccl-cu12"]


def test_heavy_groups_stack_in_config_order_below_site_packages() -> None:
    plan = plan_layers([*SMALL, *NVIDIA, TORCH], APP, [group("torch"), group("nvidia-*")])
    assert names(plan) == ["heavy:torch", "heavy:nvidia-*", "site-packages", "app"]

    plan = plan_layers([*SMALL, *NVIDIA, TORCH], APP, [group("nvidia-*"), group("torch")])
    assert names(plan) == ["heavy:nvidia-*", "heavy:torch", "site-packages", "app"]


def test_a_wheel_goes_to_the_first_group_that_names_it() -> None:
    plan = plan_layers([*SMALL, *NVIDIA], APP, [group("nvidia-cudnn-cu12"), group("nvidia-*")])

    assert contents(plan)["heavy:nvidia-cudnn-cu12"] == ["nvidia-cudnn-cu12"]
    assert contents(plan)["heavy:nvidia-*"] == ["nvidia-cublas-cu12", "nvidia-nccl-cu12"]


def test_unknown_heavy_name_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as err:
        plan_layers([*SMALL, TORCH], APP, [group("torch"), group("tensorflow")])

    assert "tensorflow" in err.value.message
    assert "torch" in err.value.hint  # the hint lists what the wheel set does have


def test_heavy_glob_matching_nothing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"nvidia-\*"):
        plan_layers(SMALL, APP, [group("nvidia-*")])


# -- threshold ---------------------------------------------------------------------------------------------
def test_threshold_gives_each_wheel_at_or_over_it_a_layer_of_its_own_in_name_order() -> None:
    at = wheel("scipy", 100 * MB)
    below = wheel("numpy", 100 * MB - 1)

    plan = plan_layers([*SMALL, TORCH, at, below], APP, threshold=100 * MB)

    assert names(plan) == ["heavy:scipy", "heavy:torch", "site-packages", "app"]
    assert "numpy" in contents(plan)["site-packages"]
    assert dict(plan.layers[0].reasons)["scipy"] == "installs 100.0 MB, at or over heavy-threshold 100.0 MB"


def test_threshold_groups_come_after_named_groups_and_never_take_their_wheels() -> None:
    plan = plan_layers([*SMALL, *NVIDIA, TORCH], APP, [group("nvidia-*")], threshold=100 * MB)

    assert names(plan) == ["heavy:nvidia-*", "heavy:torch", "site-packages", "app"]
    assert len(contents(plan)["heavy:nvidia-*"]) == 3


def test_without_threshold_big_unnamed_wheels_stay_in_site_packages() -> None:
    plan = plan_layers([*SMALL, TORCH], APP, threshold=None)

    assert names(plan) == ["site-packages", "app"]
    assert "torch" in contents(plan)["site-packages"]


def test_site_packages_holds_every_remaining_dependency_in_name_order() -> None:
    plan = plan_layers(SMALL, APP)

    assert contents(plan)["site-packages"] == ["certifi", "idna", "requests", "urllib3"]
    assert set(dict(plan.layers[0].reasons).values()) == {"dependency"}


# -- max-layers --------------------------------------------------------------------------------------------
def test_max_layers_merges_the_smallest_heavy_group_first_and_says_so() -> None:
    big, middle, small = wheel("big", 900 * MB), wheel("middle", 500 * MB), wheel("small", 200 * MB)
    # base+interpreter (1) + 3 heavy + site-packages + app = 6 layers
    plan = plan_layers([*SMALL, big, middle, small], APP, threshold=100 * MB, max_layers=5)

    assert names(plan) == ["heavy:big", "heavy:middle", "site-packages", "app"]
    assert "small" in contents(plan)["site-packages"]
    assert plan.notes == ("merged heavy:small into site-packages to stay within max-layers=5",)
    assert "max-layers=5" in dict(plan.layers[2].reasons)["small"]


def test_max_layers_merges_as_many_groups_as_needed_and_no_more() -> None:
    sizes = {"a": 300, "b": 100, "c": 400, "d": 200}
    heavy = [wheel(n, s * MB) for n, s in sizes.items()]
    # 1 + 4 heavy + site-packages + app = 7; max 5 -> the two smallest (b, then d) merge
    plan = plan_layers([*SMALL, *heavy], APP, threshold=50 * MB, max_layers=5)

    assert names(plan) == ["heavy:a", "heavy:c", "site-packages", "app"]
    assert [n for n in plan.notes] == [
        "merged heavy:b into site-packages to stay within max-layers=5",
        "merged heavy:d into site-packages to stay within max-layers=5",
    ]


def test_max_layers_breaks_size_ties_by_group_name() -> None:
    plan = plan_layers([*SMALL, wheel("zeta", 200 * MB), wheel("alpha", 200 * MB)], APP, threshold=100 * MB, max_layers=4)

    assert names(plan) == ["heavy:zeta", "site-packages", "app"]
    assert plan.notes == ("merged heavy:alpha into site-packages to stay within max-layers=4",)


def test_max_layers_counts_the_base_and_interpreter_layers() -> None:
    wheels = [*SMALL, *NVIDIA, TORCH]
    heavy = [group("torch"), group("nvidia-*")]

    # 1 fixed + 2 heavy + site-packages + app = 5: fits
    assert names(plan_layers(wheels, APP, heavy, max_layers=5, fixed_layers=1)) == [
        "heavy:torch", "heavy:nvidia-*", "site-packages", "app"
    ]
    # a base with one more layer: 6 > 5, one group merges
    plan = plan_layers(wheels, APP, heavy, max_layers=5, fixed_layers=2)
    assert len(plan.layers) == 3
    assert len(plan.notes) == 1


def test_max_layers_merges_the_group_with_the_smallest_total_size() -> None:
    # nvidia-* totals 1.3 GB across three wheels, torch alone is 0.8 GB: torch is the smaller group
    plan = plan_layers([*SMALL, *NVIDIA, TORCH], APP, [group("torch"), group("nvidia-*")], max_layers=4)

    assert names(plan) == ["heavy:nvidia-*", "site-packages", "app"]
    assert "torch" in contents(plan)["site-packages"]


def test_max_layers_merge_counts_the_site_packages_layer_it_creates() -> None:
    # no plain dependencies: merging torch alone would trade heavy:torch for a new site-packages (still 4)
    plan = plan_layers([TORCH, *NVIDIA], APP, [group("torch"), group("nvidia-*")], max_layers=3)

    assert names(plan) == ["site-packages", "app"]
    assert contents(plan)["site-packages"] == ["nvidia-cublas-cu12", "nvidia-cudnn-cu12", "nvidia-nccl-cu12", "torch"]
    assert len(plan.notes) == 2


def test_error_when_even_merging_every_group_cannot_fit() -> None:
    with pytest.raises(ConfigError) as err:
        plan_layers([*SMALL, TORCH], APP, [group("torch")], max_layers=4, fixed_layers=3)

    assert "max-layers=4" in err.value.message
    assert "5 layers" in err.value.message
    assert err.value.hint


def test_a_plan_that_fits_exactly_merges_nothing() -> None:
    plan = plan_layers([*SMALL, TORCH], APP, [group("torch")], max_layers=4)

    assert names(plan) == ["heavy:torch", "site-packages", "app"]
    assert plan.notes == ()


# -- shape and determinism ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_shuffled_input_gives_the_same_plan(seed: int) -> None:
    wheels = [*SMALL, *NVIDIA, TORCH, wheel("scipy", 150 * MB), wheel("pandas", 120 * MB)]
    heavy = [group("nvidia-*"), HeavyGroup("ml", ("torch", "scipy"))]
    expected = plan_layers(wheels, APP, heavy, threshold=100 * MB, max_layers=6)

    shuffled = list(wheels)
    random.Random(seed).shuffle(shuffled)

    assert plan_layers(shuffled, APP, heavy, threshold=100 * MB, max_layers=6) == expected


@pytest.mark.parametrize(
    "heavy, threshold",
    [((), None), ((), 1), ((group("nvidia-*"),), 1), ((group("nvidia-*", "my*", name="everything"),), None)],
    ids=["plain", "app-over-threshold", "groups-and-threshold", "glob-that-also-matches-the-app"],
)
def test_app_wheel_is_always_last_and_alone(heavy: tuple[HeavyGroup, ...], threshold: int | None) -> None:
    app = wheel("myapp", 900 * MB)
    wheels = [*SMALL, *NVIDIA, app]  # a resolver may list the app among the wheels too

    plan = plan_layers(wheels, app, heavy, threshold)

    last = plan.layers[-1]
    assert (last.name, last.kind, last.wheels) == ("app", "app", (app,))
    assert all(w.name != "myapp" for layer in plan.layers[:-1] for w in layer.wheels)


def test_naming_the_app_heavy_matches_nothing() -> None:
    with pytest.raises(ConfigError, match="myapp"):
        plan_layers([*SMALL, APP], APP, [group("myapp")])


def test_every_wheel_is_in_exactly_one_layer_with_a_reason() -> None:
    wheels = [*SMALL, *NVIDIA, TORCH, wheel("scipy", 150 * MB)]
    plan = plan_layers(wheels, APP, [group("nvidia-*")], threshold=100 * MB, max_layers=5)

    placed = [w for layer in plan.layers for w in layer.wheels]
    assert sorted(w.name for w in placed) == sorted(w.name for w in [*wheels, APP])
    for layer in plan.layers:
        assert sorted(dict(layer.reasons)) == sorted(w.name for w in layer.wheels)


def test_no_dependencies_gives_only_the_app_layer() -> None:
    assert names(plan_layers([], APP)) == ["app"]


def test_an_exact_name_wins_over_an_earlier_glob() -> None:
    plan = plan_layers([*SMALL, *NVIDIA], APP, [group("nvidia-*"), group("nvidia-cudnn-cu12")])

    assert contents(plan)["heavy:nvidia-cudnn-cu12"] == ["nvidia-cudnn-cu12"]
    assert contents(plan)["heavy:nvidia-*"] == ["nvidia-cublas-cu12", "nvidia-nccl-cu12"]


def test_a_group_whose_packages_earlier_groups_took_is_dropped_with_a_note() -> None:
    plan = plan_layers([*SMALL, *NVIDIA], APP, [group("nvidia-*"), group("nvidia-c*")])

    assert "heavy:nvidia-c*" not in contents(plan)
    assert any("nvidia-c*" in note and "empty" in note for note in plan.notes)


def test_threshold_layer_names_never_collide_with_a_user_group() -> None:
    named = HeavyGroup("torch", ("nvidia-*",))
    plan = plan_layers([*SMALL, *NVIDIA, TORCH], APP, [named], threshold=TORCH.installed_size)

    names = [layer.name for layer in plan.layers]
    assert len(names) == len(set(names))
    assert "heavy:torch-by-size" in names


def test_a_misspelled_name_inside_a_named_group_is_an_error_not_ignored() -> None:
    with pytest.raises(ConfigError, match="'ml': torhc matches no package"):
        plan_layers([*SMALL, TORCH], APP, [group("nvidia-*", "torhc", "torch", name="ml")])


def test_first_party_packages_get_a_workspace_layer_between_site_packages_and_app() -> None:
    lib, tools = wheel("shared-lib", 2_000), wheel("tools", 1_000)
    plan = plan_layers([TORCH, *SMALL], APP, [group("torch")], workspace=[(tools, "built from ../tools (path source)"), (lib, "built from ../lib (workspace member)")])
    assert names(plan) == ["heavy:torch", "site-packages", "workspace", "app"]
    assert contents(plan)["workspace"] == ["shared-lib", "tools"]
    assert dict(plan.layers[2].reasons) == {"shared-lib": "built from ../lib (workspace member)", "tools": "built from ../tools (path source)"}
    assert names(plan_layers(SMALL, APP)) == ["site-packages", "app"]  # no local package: no workspace layer


def test_the_workspace_layer_counts_toward_max_layers() -> None:
    local = [(wheel("shared-lib"), "built from ../lib (workspace member)")]
    # base + interpreter (2) + heavy:torch + site-packages + workspace + app = 6: torch merges into site-packages at 5
    plan = plan_layers([TORCH, *SMALL], APP, [group("torch")], max_layers=5, fixed_layers=2, workspace=local)
    assert names(plan) == ["site-packages", "workspace", "app"]
    assert names(plan_layers([TORCH, *SMALL], APP, [group("torch")], max_layers=6, fixed_layers=2, workspace=local)) == ["heavy:torch", "site-packages", "workspace", "app"]

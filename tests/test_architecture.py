import pytest
import torch
from torch import nn

from emscope.errors import ArchitectureError, LayerIndexError
from emscope.models.architecture import decoder_blocks, resolve_layers
from emscope.testing import FAMILIES, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_blocks_found_for_every_family(family):
    lm = tiny_model(family, n_layers=2)
    assert isinstance(lm.blocks, nn.ModuleList) and len(lm.blocks) == 2 == lm.n_layers
    assert lm.width == 64


def test_blocks_found_by_probe_when_class_unknown():
    lm = tiny_model("llama", n_layers=2)

    class Wrapper(nn.Module):  # an unknown class: no table entry, found structurally
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.config = inner.config

    assert decoder_blocks(Wrapper(lm.model)) is lm.model.model.layers


def test_bad_blocks_path_names_the_fix():
    lm = tiny_model("llama", n_layers=2)
    with pytest.raises(ArchitectureError, match="blocks_path"):
        decoder_blocks(lm.model, blocks_path="model.nope")


def test_no_config_is_a_clear_error():
    with pytest.raises(ArchitectureError, match="config"):
        decoder_blocks(nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", [0, 1, 2, 3]),
        (None, [0, 1, 2, 3]),
        (-1, [3]),
        ("0,2", [0, 2]),
        ("1-3", [1, 2, 3]),
        ([3, -4], [0, 3]),
        ("-2", [2]),
    ],
)
def test_resolve_layers(spec, expected):
    assert resolve_layers(spec, 4) == expected


@pytest.mark.parametrize("spec", [4, -5, "7", [0, 9]])
def test_layer_out_of_range_gives_valid_range(spec):
    with pytest.raises(LayerIndexError, match=r"valid indices are 0\.\.3"):
        resolve_layers(spec, 4)


def test_unreadable_layer_string():
    with pytest.raises(LayerIndexError, match="cannot read layer spec"):
        resolve_layers("first", 4)
    with pytest.raises(LayerIndexError):
        resolve_layers([torch.tensor(1)], 4)  # type: ignore[list-item]


def test_family_paths_that_do_not_resolve_fall_back_to_the_probe(monkeypatch):
    from dataclasses import replace

    from emscope.models import families
    from emscope.models.writers import down_projection, writer_layout

    lm = tiny_model("llama", n_layers=2)
    wrong = replace(families.FAMILIES["llama"], blocks=("nope.layers",), attn_out="nope", down_proj="nope")
    monkeypatch.setitem(families.FAMILIES, "llama", wrong)
    assert decoder_blocks(lm.model) is lm.model.model.layers
    assert writer_layout(lm).attn == "self_attn.o_proj"
    assert down_projection(lm, 1) == "mlp.down_proj"

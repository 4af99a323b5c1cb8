"""Places in the model, by one name each: the registry that capture, steer, ablate and score share.

A site is a kind of place in every decoder block; ``site.LAYER`` is one place (after
TransformerLens; negative layers count from the end):

==============  =====================================================================
``resid_pre.i``   the residual stream entering block i (for i = 0, the embedding output)
``attn_out.i``    what block i's attention adds to the stream
``mlp_out.i``     what block i's MLP adds to the stream
``resid_post.i``  the stream leaving block i: **layer i** of the documented convention
                  (`emscope.models.architecture`), ``hidden_states[i + 1]`` in Hugging Face
==============  =====================================================================

So ``resid_post.i == resid_pre.(i+1)`` and ``resid_post.i == resid_pre.i + attn_out.i +
mlp_out.i`` (tested for every family in ``tests/test_conformance.py``). ``attn_out`` and
``mlp_out`` are hooked on the writer modules of `emscope.models.writers` (for Gemma 2/3, the
norms after the projections). The older names ``block_input``, ``block_output``,
``attn_output``, ``mlp_output`` and TransformerLens' ``blocks.12.hook_resid_post`` are read
as aliases.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn
from torch.utils.hooks import RemovableHandle

from emscope.activations.hooks import BlockHook, add_block_hook, add_block_pre_hook
from emscope.errors import ConfigError, LayerIndexError, lookup
from emscope.models.architecture import LayerSpec, resolve_layers
from emscope.models.loading import LoadedModel
from emscope.models.writers import WriterLayout, block_writers, writer_layout

# (model, layer, writer layout or None) -> the module to hook
Locate = Callable[[LoadedModel, int, WriterLayout | None], nn.Module]


@dataclass(frozen=True)
class SiteSpec:
    """How to hook one kind of site: on which module of a block, at its input or its output."""

    name: str
    description: str
    locate: Locate
    at_input: bool = False  # a forward pre-hook on the module's input instead of a hook on its output
    needs_writers: bool = False  # `locate` needs the writer layout


def _block(lm: LoadedModel, layer: int, _w: WriterLayout | None) -> nn.Module:
    return lm.blocks[layer]


def _writer(index: int) -> Locate:
    def locate(lm: LoadedModel, layer: int, w: WriterLayout | None) -> nn.Module:
        return block_writers(lm, layer, w or writer_layout(lm))[index]

    return locate


SITES: dict[str, SiteSpec] = {
    s.name: s
    for s in (
        SiteSpec("resid_pre", "the residual stream entering the block", _block, at_input=True),
        SiteSpec("attn_out", "what the attention adds to the stream", _writer(0), needs_writers=True),
        SiteSpec("mlp_out", "what the MLP adds to the stream", _writer(1), needs_writers=True),
        SiteSpec("resid_post", "the residual stream leaving the block (layer i)", _block),
    )
}
ALIASES = {
    "block_input": "resid_pre",
    "block_output": "resid_post",
    "attn_output": "attn_out",
    "mlp_output": "mlp_out",
}
DEFAULT_SITE = "resid_post"  # what capture records and directions are extracted from
_TRANSFORMER_LENS = re.compile(r"^blocks\.(-?\d+)\.hook_(\w+)$")
_WITH_LAYER = re.compile(r"^(\w+)\.(-?\d+)$")


@dataclass(frozen=True)
class Site:
    """One site name, with its layer (None: the site at every chosen layer)."""

    name: str  # canonical: a key of `SITES`
    layer: int | None = None

    def __str__(self) -> str:
        return self.name if self.layer is None else f"{self.name}.{self.layer}"

    @property
    def spec(self) -> SiteSpec:
        return SITES[self.name]


def canonical_site(name: str) -> str:
    """The canonical name of a site given by its name or an alias (ConfigError, with a did-you-mean, if unknown)."""
    name = ALIASES.get(name, name)
    try:
        return lookup(SITES, name, "site").name
    except ConfigError as e:
        raise ConfigError(f"{e}; a site may end in .LAYER, e.g. 'resid_post.12'") from None


def parse_site(text: str | Site) -> Site:
    """Read ``"resid_post"``, ``"resid_post.12"``, ``"mlp_out.-1"``, an alias, or ``"blocks.12.hook_resid_post"``."""
    if isinstance(text, Site):
        return text
    text = text.strip()
    if m := _TRANSFORMER_LENS.match(text):
        return Site(canonical_site(m.group(2)), int(m.group(1)))
    if m := _WITH_LAYER.match(text):
        return Site(canonical_site(m.group(1)), int(m.group(2)))
    return Site(canonical_site(text))


def resolve_sites(sites: Iterable[str | Site], layers: LayerSpec, n_layers: int) -> list[Site]:
    """The places `sites` name in a model of `n_layers` blocks, each with a non-negative layer.

    A site with its own layer (``"resid_post.3"``) is that one place; a bare site
    (``"resid_post"``) is placed at every layer of `layers` (None: all). Giving both a layer
    in the name and `layers` is a `ConfigError`. Sorted by layer, then in the order of `SITES`.
    """
    parsed = [parse_site(s) for s in sites]
    if not parsed:
        raise ConfigError(f"no sites given; choose from {', '.join(SITES)}")
    placed = [s for s in parsed if s.layer is not None]
    if placed and layers is not None:
        raise ConfigError(
            f"site {str(placed[0])!r} names its layer and layers={layers!r} was given too: use one or the other"
        )
    out: set[Site] = set()
    for site in parsed:
        chosen = resolve_layers(layers if site.layer is None else site.layer, n_layers)
        out.update(Site(site.name, layer) for layer in chosen)
    order = list(SITES)
    return sorted(out, key=lambda s: (s.layer, order.index(s.name)))


def writers_for(
    lm: LoadedModel, sites: Iterable[Site], writer_paths: tuple[str, str] | None = None
) -> WriterLayout | None:
    """The writer layout when some of `sites` need it (once, so many hooks share one probe), else None."""
    return writer_layout(lm, writer_paths) if any(s.spec.needs_writers for s in sites) else None


def site_module(lm: LoadedModel, site: Site, layout: WriterLayout | None = None) -> nn.Module:
    """The module whose input (``resid_pre``) or output (the others) is `site`."""
    if site.layer is None:
        raise LayerIndexError(f"site {site.name!r} has no layer: name one, e.g. '{site.name}.0'")
    layer = resolve_layers(site.layer, lm.n_layers)[0]
    return site.spec.locate(lm, layer, layout)


def hook_site(lm: LoadedModel, site: Site | str, fn: BlockHook, layout: WriterLayout | None = None) -> RemovableHandle:
    """Run `fn` on the hidden states [batch, seq, width] at `site`; a tensor it returns replaces them.

    `layout` is the writer layout (`writers_for`); found on the spot when None and needed.
    """
    site = parse_site(site)
    module = site_module(lm, site, layout)
    return (add_block_pre_hook if site.spec.at_input else add_block_hook)(module, fn)


@contextmanager
def site_hooks(
    lm: LoadedModel, hooks: Mapping[Site | str, BlockHook], writer_paths: tuple[str, str] | None = None
) -> Iterator[list[RemovableHandle]]:
    """Attach {site: fn} hooks for the duration of the `with` body; removed in ``finally``."""
    sites = {parse_site(s): fn for s, fn in hooks.items()}
    layout = writers_for(lm, sites, writer_paths)
    handles: list[RemovableHandle] = []
    try:
        for site, fn in sites.items():
            handles.append(hook_site(lm, site, fn, layout))
        yield handles
    finally:
        for h in handles:
            h.remove()


def describe(sites: Sequence[Site], n_layers: int) -> str:
    """Short text for a list of places: ``sites=resid_post layers=[1, 2]`` or ``sites=[attn_out.0, mlp_out.2]``."""
    names = list(dict.fromkeys(s.name for s in sites))
    per_name = {name: [s.layer for s in sites if s.name == name] for name in names}
    layers = next(iter(per_name.values()), [])
    if all(v == layers for v in per_name.values()):
        shown = "all" if layers == list(range(n_layers)) else str(layers)
        return f"sites={','.join(names)} layers={shown}"
    return f"sites=[{', '.join(map(str, sites))}]"

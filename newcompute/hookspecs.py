"""The plugin contract: every hook a paradigm plugin may implement.

A plugin is any module registered under the ``newcompute`` entry-point group
whose functions are decorated with :data:`newcompute.hookimpl`. It only
implements the hooks it needs. The core calls the layer, attention and
optimizer hooks *only on the plugin that registered the paradigm in
question*, so an implementation never sees another plugin's paradigms; it
still receives the :class:`~newcompute.paradigm.Paradigm` because one plugin
may register several (``mxfp8``, ``mxfp4``…).

Compatibility: :data:`HOOKSPEC_VERSION` follows semantic versioning. A plugin
states the versions it supports in a module attribute
``newcompute_api = ">=1.0,<2"`` (a PEP 440 specifier); a plugin whose range
excludes the running core is listed as incompatible and not loaded. A minor
version only adds hooks, so ``">=1.0,<2"`` (or ``"~=1.0"``) is the range to
declare; ``"==1.0.*"`` means "1.0 exactly" and is refused by a 1.1 core.

* 1.0: ``newcompute_register_paradigms``, ``newcompute_replace_layer``,
  ``newcompute_attention_matmuls``, ``newcompute_build_optimizer``,
  ``newcompute_register_commands``.
* 1.1: ``newcompute_register_presets``. Hooks are declared in that order;
  later versions append theirs below.
* 1.2 (additive): ``newcompute_statistics``, ``newcompute_register_data_sources``,
  ``newcompute_optimizer_statistics``, ``newcompute_estimate_cost``; a data
  source may claim whole folders (``DataSource(folders=...)``).

An exception a hook raises (other than :class:`newcompute.ConfigError` or
:class:`newcompute.RunError`, which carry a message meant for users) is
reported as a :class:`newcompute.PluginError` naming the plugin, the
paradigm, the hook and the layer; so is one raised in the forward or
backward of a module a hook returned. A plugin that raises in a
registration hook is listed as failed and the others load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import torch
    import typer
    from pydantic import BaseModel
    from torch import nn

    from newcompute.attention import AttentionMatmuls
    from newcompute.costs import CostEstimate, MatmulShape
    from newcompute.datasource import DataSource
    from newcompute.paradigm import Paradigm
    from newcompute.params import OptimizerSettings, ParamInfo
    from newcompute.presets import Preset
    from newcompute.telemetry.statistics import Statistic

PROJECT_NAME = "newcompute"
HOOKSPEC_VERSION = "1.2"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def newcompute_register_paradigms() -> list[Paradigm]:
    """Declare the paradigms this plugin provides.

    Called once when the plugin manager loads plugins. Return every paradigm
    the plugin offers; names must be unique across all installed plugins
    (a clash is reported by ``newcompute list-paradigms`` and the later
    plugin's paradigm is refused). Not ``firstresult``: every plugin answers.
    """


@hookspec(firstresult=True)
def newcompute_replace_layer(
    paradigm: Paradigm, config: BaseModel, name: str, module: nn.Module
) -> nn.Module | None:
    """Return a module to stand in for ``module``, or ``None`` to leave it.

    Called by the composer for every module whose qualified ``name`` passes
    the paradigm's include/exclude rules (``lm_head`` is excluded unless the
    user includes it), for paradigms with :attr:`Role.LAYER`, leaves first.
    ``module`` may be an ``nn.Linear``, a ``transformers.pytorch_utils.Conv1D``
    (GPT-2 family) or anything else; subclassing
    :class:`newcompute.layers.ReplacedLinear` handles both linear kinds and
    keeps parameter names and layouts, so checkpoints stay loadable by the
    unmodified model. ``config`` is the validated instance of
    ``paradigm.config``. ``firstresult``.

    The returned module is put in the training mode of the module it
    replaces. It must keep what the model around it sees (output shape,
    dtype and device, and the source's parameter names and layouts) and
    keep every piece of state it needs to reproduce its output in buffers:
    the conformance suite checks both (docs/plugins.md lists every rule it
    enforces and why). It should learn (update running statistics, advance
    counters) only in training mode, so evaluating a model leaves it as it
    was, and never while :func:`newcompute.probing` is true.
    """


@hookspec(firstresult=True)
def newcompute_attention_matmuls(
    paradigm: Paradigm, config: BaseModel, name: str, attention: nn.Module
) -> AttentionMatmuls | None:
    """Return the two matrix products to use inside ``attention``, or ``None``.

    Called once per attention module (``name`` is its qualified name) for
    paradigms with :attr:`Role.ATTENTION`. The returned module is attached to
    the attention module, so its buffers are part of the model's state dict.
    At run time the core's ``newcompute`` attention implementation (registered
    in transformers' ``AttentionInterface``) calls ``qk`` and ``pv`` and
    handles scaling, masks, grouped-query repeat, softmax and dropout itself.
    ``firstresult``. The same rules as for a replaced layer hold for its
    state and training mode.
    """


@hookspec(firstresult=True)
def newcompute_build_optimizer(
    paradigm: Paradigm,
    config: BaseModel,
    params: list[ParamInfo],
    settings: OptimizerSettings,
) -> torch.optim.Optimizer | None:
    """Build the optimizer for the trainable parameters described by ``params``.

    Called by the trainer for the one paradigm with :attr:`Role.OPTIMIZER`
    (two such paradigms are a composition error). Each
    :class:`~newcompute.params.ParamInfo` says what the parameter is (hidden
    matrix, embedding, output head, norm, bias, scalar), so per-parameter
    choices need no name guessing. ``settings`` carries the run's lr, weight
    decay and betas, which the paradigm should treat as the base values it
    scales. The optimizer must support ``state_dict``/``load_state_dict`` and
    torch LR schedulers. ``firstresult``.
    """


@hookspec
def newcompute_register_commands(app: typer.Typer) -> None:
    """Add subcommands to the ``newcompute`` command line.

    Called once while the CLI is built; use ``app.command()`` or
    ``app.add_typer()``. Not ``firstresult``: every plugin may add commands.
    """


@hookspec
def newcompute_register_presets() -> list[Preset]:
    """Declare model presets: architectures ``--model NAME`` builds offline (since 1.1).

    Called once when the plugin manager loads plugins; return
    :class:`newcompute.Preset` objects. The core registers its own
    (``tiny``, ``clm-60m``…) through this hook first, and names must be
    unique across all plugins: a clash is reported by ``newcompute
    list-paradigms`` and the later plugin's preset is refused. Not
    ``firstresult``: every plugin answers.
    """


@hookspec(firstresult=True)
def newcompute_statistics(
    paradigm: Paradigm, config: BaseModel, name: str, module: nn.Module
) -> dict[Statistic, torch.Tensor] | None:
    """Report what ``module`` has accumulated since it was built, or ``None``.

    Added in 1.2; a plugin without it simply reports nothing. ``module`` is
    a replacement this paradigm returned for layer ``name`` or the
    :class:`~newcompute.attention.AttentionMatmuls` it attached to attention
    module ``name``. Each value is a 0-d floating tensor on ``module``'s
    device, keyed by a :class:`~newcompute.telemetry.statistics.Statistic`
    (name, one-line description, unit); a statistic declaring ``bins`` (a
    histogram or a short series) is a 1-D tensor with one entry per bin. Accumulate during ``forward`` with
    in-place ops on buffers allocated at build time (no ``.item()``, no new
    tensors), so training needs no host sync and CUDA-graph capture keeps
    working. Measure only while :func:`newcompute.collecting_statistics` is
    true, so a run without telemetry computes nothing extra;
    :class:`newcompute.StatisticSums` holds the sums. The core calls this
    hook only when it logs telemetry and reads the tensors then, which in
    training is while the steps after the measured one run (on a GPU, from a
    thread other than the training thread): report what
    collection accumulated, not state that every step changes (copy that
    into the sums while collecting). A training step measures every N-th
    row of an activation: take activations through
    :func:`newcompute.statistics_rows`. ``firstresult``.
    """


@hookspec
def newcompute_register_data_sources() -> list[DataSource]:
    """Declare data sources: kinds of data ``--dataset`` can name (since 1.2).

    Called once when the plugin manager loads plugins; return
    :class:`newcompute.DataSource` objects, each claiming URI schemes
    (``mydata:``), file suffixes (``.csv``, ``.jsonl.gz``) and/or whole
    folders (``folders=``: a function saying whether a folder is one dataset
    it reads). The core registers its own (``builtin:``, ``hf:``, ``.txt``,
    ``.jsonl``, ``.parquet``, ``.bin``, ``.npy``, ``save_to_disk`` folders)
    through this hook first. Names, schemes and suffixes must
    be unique across all plugins: a clash is reported by ``newcompute
    list-paradigms`` naming both plugins, and the later plugin's source is
    refused. An exception a source raises while it is read (other than
    :class:`newcompute.ConfigError` or :class:`newcompute.RunError`) is
    reported naming the plugin and the source. Not ``firstresult``: every
    plugin answers.
    """


@hookspec(firstresult=True)
def newcompute_optimizer_statistics(
    paradigm: Paradigm, config: BaseModel, optimizer: torch.optim.Optimizer
) -> dict[str, dict[Statistic, torch.Tensor]] | None:
    """Report, per parameter, what the optimizer has accumulated, or ``None`` (since 1.2).

    Called for the paradigm with :attr:`Role.OPTIMIZER` on the optimizer its
    ``newcompute_build_optimizer`` returned. Keys are parameter names as
    in ``model.named_parameters()``; values follow the rules of
    :func:`newcompute_statistics` (0-d floating tensors on the parameter's
    device, accumulated in place while
    :func:`newcompute.collecting_statistics` is true, read only when
    telemetry is logged). ``firstresult``.
    """


@hookspec(firstresult=True)
def newcompute_estimate_cost(
    paradigm: Paradigm,
    config: BaseModel,
    layers: list[MatmulShape],
    model_macs_per_token: int,
    tokens: int,
    tokens_per_step: int,
) -> CostEstimate | None:
    """Estimate what the hardware this paradigm simulates would cost, relative to bf16 (since 1.2).

    Called once when a run finishes, for each paradigm that computes
    something. ``layers`` are the products this paradigm computes (its
    replaced linear layers and intercepted attention modules, each a
    :class:`~newcompute.costs.MatmulShape` with its multiply-accumulates per
    token) or, for an optimizer paradigm, the hidden matrices it updates;
    ``model_macs_per_token`` is the forward multiply-accumulates per token
    of all the model's products; ``tokens`` were trained on, in optimizer
    steps of ``tokens_per_step``. Return a
    :class:`~newcompute.costs.CostEstimate`: energy, operand bytes and
    throughput of those products as ratios to bf16 (``scope="layers"``), or
    factors on the whole run (``scope="run"``, e.g. an optimizer's extra
    products). Every figure it uses must cite its source (paper, table or
    figure) in ``sources``; leave a quantity ``None`` that has none, and say
    why in ``notes``. Give the config a ``cost:
    newcompute.costs.CostOverrides`` field to let users replace the
    figures. Return ``None`` for no estimate. ``firstresult``.
    """

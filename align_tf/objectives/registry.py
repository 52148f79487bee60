"""The objective registry: ``config.objective.name`` → an ``Objective`` class.

An objective registers itself in its own module, with what the rest of the package needs to know
about it as class attributes and class methods (defaults in ``base.Objective``)::

    @register_objective("contrastive")
    class ContrastiveObjective(Objective):
        supports_accumulation = True          # train.accumulation_steps > 1 is allowed
        similarity = "softmax"                # the model.similarity it trains
        needs_fusion = False                  # model.fusion_layers > 0 required (or refused)
        config_fields = ("label_smoothing",)  # the objective.contrastive.* fields it reads
        defaults = {}                         # a plug-in's section defaults (below)

        @classmethod
        def from_config(cls, section, model, optimizer, **context): ...  # its own section only
        @classmethod
        def validate(cls, config): ...        # one-line ConfigError naming objective.<name>.FIELD

Config: ``objective.name`` picks the class, and each objective has its own section
``objective.<name>`` with the fields it reads (``config_fields``). ``configs/base.py`` spells the
package's objectives' sections; an objective registered from outside the package brings its
section as ``defaults``, which ``ensure_section`` adds to a config that names it and lacks the
section (``trainer.validate_config`` and ``build_objective`` call it).

The package's objectives register when ``align_tf.objectives`` imports their modules; another
one registers when its module is imported (e.g. by ``--plugins=MODULE`` or the config file that
names it). Everything that depends on the objective reads this registry: ``build_objective``,
``NAMES``, ``supports_accumulation``, ``trainer.validate_config``, ``finetune.make_config`` and
the train CLI's ``--config.objective.name=sigmoid`` → ``model.similarity=sigmoid``.
"""

from __future__ import annotations

from align_tf import registry

_OBJECTIVES: dict = {}  # name -> class, in registration order


def register_objective(name: str):
    """Class decorator: registers the class as objective ``name`` (sets ``cls.name``).

    Registering a second class under a taken name is a ``ValueError`` (re-registering the same
    class, e.g. on a module reload, replaces it)."""
    return lambda cls: registry.add(_OBJECTIVES, "objective", name, cls)


def names() -> tuple:
    """The registered objective names, in registration order."""
    return tuple(_OBJECTIVES)


def get(name: str):
    """The class registered as ``name``; ``ValueError`` naming the choices if none is."""
    if name not in _OBJECTIVES:
        raise ValueError(f"unknown objective.name {name!r}; choose from {list(names())}")
    return _OBJECTIVES[name]


def registered() -> dict:
    """``{name: class}`` of every registered objective (a copy)."""
    return dict(_OBJECTIVES)


def supports_accumulation(name: str) -> bool:
    """Whether objective ``name`` can run a step as sub-batches (``train.accumulation_steps > 1``):
    its loss depends on the batch only through the embeddings (``Objective.supports_accumulation``).
    False for an unknown name."""
    return name in _OBJECTIVES and bool(_OBJECTIVES[name].supports_accumulation)


def model_similarity(name: str, default: str = "softmax") -> str:
    """The ``model.similarity`` objective ``name`` trains (``default`` for an unknown name)."""
    return _OBJECTIVES[name].similarity if name in _OBJECTIVES else default


def ensure_section(objective_config):
    """The section ``objective.<name>`` of the objective ``objective_config.name`` names
    (``objective_config``: ``config.objective``), added from the class's ``defaults`` when the
    config lacks it (a plug-in objective: ``configs/base.py`` spells only the package's own).
    ``ValueError`` naming the choices for an unknown name."""
    cls = get(objective_config.name)
    if cls.name not in objective_config:
        import ml_collections
        with objective_config.unlocked():
            objective_config[cls.name] = ml_collections.ConfigDict(dict(cls.defaults))
    return objective_config[cls.name]

"""Model types that extend the model their config names, in place.

``ENNModel`` and ``ENNLocalClassifier`` are registered classes derived from
:class:`MixinModel`. Building one builds the model its ``model`` config names
(any MMPretrain model) and returns *that* object, its class now
``(ENNModel, OwnClass)``: ``isinstance(obj, ENNModel)`` and
``isinstance(obj, OwnClass)`` both hold, every method and state-dict key of
the model's own class keeps working, and a checkpoint of it loads into the
plain class (and a dense checkpoint into it). Python then runs the type's
``__init__`` on that object, which adds the behaviour (the ENN conversion,
the local heads).

Wrapping the model instead (``self.module``, as MMPretrain's ``LoRAModel``
does) would prefix every state-dict key and break that two-way checkpoint
compatibility. The derived classes are created once per pair, named after
both (``ENNImageClassifier``), and pickle by reference to their parts
(:meth:`MixinModel.__reduce_ex__`), so ``copy.deepcopy`` and ``pickle`` work.
"""
import copy
import copyreg
from typing import Dict, Tuple

from mmpretrain.registry import MODELS

__all__ = ['MixinModel', 'vanilla_class']

# (mixin type, base class) -> derived class; one cache for every mixin type.
_DERIVED: Dict[Tuple[type, type], type] = {}


def derived_class(mixin: type, base: type) -> type:
    """The class ``(mixin, base)``, created once and named ``mixin.prefix +
    base.__name__`` (``ENNImageClassifier``).

    Args:
        mixin (type): A :class:`MixinModel` subclass (its ``prefix`` names
            the result).
        base (type): The class of the built model.

    Returns:
        type: The cached class deriving from ``mixin`` and ``base``.
    """
    key = (mixin, base)
    if key not in _DERIVED:
        _DERIVED[key] = type(f'{mixin.prefix}{base.__name__}', (mixin, base),
                             {'__module__': mixin.__module__})
    return _DERIVED[key]


def vanilla_class(obj) -> type:
    """The class of ``obj`` without the types of this module mixed in.

    Args:
        obj (object): Any object, e.g. a model built by ``ENNModel``.

    Returns:
        type: The plain class (``ImageClassifier``, say); ``type(obj)`` if
        no mixin was applied.
    """
    return _mixins_of(type(obj))[-1]


def _mixins_of(cls: type) -> tuple:
    """``(mixin, ..., plain class)`` that ``cls`` was derived from, outermost
    first: what a pickle stores instead of the derived class itself."""
    parts = {derived: key for key, derived in _DERIVED.items()}
    chain = []
    while cls in parts:
        mixin, cls = parts[cls]
        chain.append(mixin)
    return (*chain, cls)


def _new_derived(*chain):
    """Unpickling: an empty object of the class derived from ``chain``."""
    cls = chain[-1]
    for mixin in reversed(chain[:-1]):
        cls = derived_class(mixin, cls)
    return object.__new__(cls)


class MixinModel:
    """Base of the model types that extend a built model in place.

    Subclasses set :attr:`prefix` and implement ``__init__(self, model, ...,
    data_preprocessor=None)``, which runs on the built model (do not call
    ``super().__init__``: the model is initialised already), and may
    override :meth:`check_model`.
    """
    prefix = ''

    def __new__(cls, model: dict, *args, data_preprocessor=None, **kwargs):
        if not isinstance(model, dict):
            raise TypeError(f'{cls.__name__} takes the config of the model it extends '
                            f'(a dict with a type), got {type(model).__name__}.')
        model = copy.deepcopy(model)
        if data_preprocessor is not None:  # what the Runner passes
            model.setdefault('data_preprocessor', data_preprocessor)
        built = MODELS.build(model)
        cls.check_model(built)
        built.__class__ = derived_class(cls, type(built))
        return built

    @classmethod
    def check_model(cls, model) -> None:
        """Raise if ``model`` (just built) cannot be extended by ``cls``.

        Args:
            model (nn.Module): The model just built from the ``model``
                config.

        Raises:
            TypeError: ``model`` is an instance of ``cls`` already.
        """
        if isinstance(model, cls):
            raise TypeError(f'the model inside {cls.__name__} is already one; nest '
                            f'{cls.__name__} only once.')

    def __reduce_ex__(self, protocol):
        # The derived class lives in no module: pickle the parts it is made of.
        reduced = object.__reduce_ex__(self, protocol)
        if reduced[0] is not copyreg.__newobj__:
            return reduced
        return (_new_derived, _mixins_of(type(self)), *reduced[2:])


"""The script's own tensor operations, seen one by one: a `TorchFunctionMode` for the fixes whose change sits in a
line of the loss the script wrote by hand (`scale * img @ txt.t()` on unnormalised rows, `-(targets *
log_softmax(logits)).sum(1)` with soft targets, `img.half() @ txt.half().t()`), where no function of ours can be
patched and no module hook reaches.

`watch_ops(handlers)` enters the mode and returns the undo. `handlers` maps an operation's name (`mul`, `matmul`,
`log_softmax`...; `torch.mul`, `Tensor.mul` and `a * b` share one name; `*`: every other one) to `handler(call)`,
which returns the operation's result: `call.run()` computes it as the script asked, or with arguments changed
(`call.run(*args)`). A handler is only called for the script's operations outside every module's forward (the loss
lines; with `inside_modules=True` the model's forwards too; with `model=` the forward of a module that holds no
parameter and is not part of that model counts as loss lines too: a loss written as a module, a SupConLoss), never
for the watch's own probes. Inside a handler the
mode is off, so the handler's own torch calls are not seen again. While a mode is on, every torch call pays a Python
function call: meant for ablation runs, never for a plain watch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .base import called_by_own_code

# the names one operation goes by: torch.mul, Tensor.mul, a * b, 2 * a (-> mul), a @ b (-> matmul), a / b (-> div)
ALIASES = {"__mul__": "mul", "__rmul__": "mul", "multiply": "mul", "__matmul__": "matmul", "mm": "matmul",
           "__truediv__": "div", "true_divide": "div", "divide": "div"}


@dataclass
class Call:
    func: Any
    args: tuple
    kwargs: dict

    def run(self, *args: Any) -> Any:
        return self.func(*(args or self.args), **self.kwargs)


class _Depth:
    """How many module forwards are running (global forward pre-hook / hook): 0 in the script's own loss lines."""

    def __init__(self, model: Any = None) -> None:
        import torch.nn.modules.module as mm

        self.n = 0
        # with a model: its modules, and every module that holds a parameter, are forwards; a parameter-free module
        # of the script's own (a loss written as a module) is loss lines
        self._model = None if model is None else {id(m) for m in model.modules()}
        self._handles = [mm.register_module_forward_pre_hook(self._enter),
                         mm.register_module_forward_hook(self._leave, always_call=True)]

    def _counts(self, module: Any) -> bool:
        return self._model is None or id(module) in self._model or next(module.parameters(), None) is not None

    def _enter(self, module: Any, args: Any) -> None:
        self.n += self._counts(module)

    def _leave(self, module: Any, args: Any, out: Any) -> None:
        self.n = max(0, self.n - self._counts(module))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def op_name(func: Any) -> str:
    name = getattr(func, "__name__", "")
    return ALIASES.get(name, name)


def watch_ops(handlers: dict[str, Callable[[Call], Any]], inside_modules: bool = False,
              model: Any = None) -> Callable[[], None]:
    from torch.overrides import TorchFunctionMode

    depth = _Depth(model)
    every = handlers.get("*")

    class ScriptOps(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            handler = handlers.get(op_name(func), every)
            call = Call(func, tuple(args), kwargs or {})
            if handler is None or (depth.n and not inside_modules) or called_by_own_code(2):
                return call.run()
            return handler(call)

    mode = ScriptOps()
    mode.__enter__()

    def undo() -> None:
        mode.__exit__(None, None, None)
        depth.remove()
    return undo

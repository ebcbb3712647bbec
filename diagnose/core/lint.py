"""Static checks of model source (Python `ast`), aimed at high precision: each check fires only on a
pattern whose effect can be told from the code alone.

DL001  a parameter created with a random initialiser and overwritten in place right after (the
       seed's encoders/perceiver.py:155-156: `nn.Parameter(torch.randn(n, d))` then
       `nn.init.normal_(..., std=0.02)`): the first initialiser is dead code.
DL002  learned latents/queries initialised to a constant (zeros/ones/full): every latent is the same
       vector, gets the same gradient, and stays the same; a normalisation of a constant row erases it.
DL003  softmax over dim 0 (the batch axis) inside a pooling module: each sample's pooling weights
       depend on the other samples in the batch, instead of summing to 1 over its tokens.
DL004  softmax over the last axis of a scorer whose output width is 1 (`nn.Linear(d, 1)`) without a
       squeeze: the axis has one element, so every weight is exactly 1.
DL005  learned latents/queries created with requires_grad=False: they never train.

Suppression: `# noqa` or `# noqa: DL001` on the reported line. Branches selected by comparing a value
with a string literal (`if mode == "seed":`) are alternatives that a config picks on purpose (e.g. a
faithful reproduction of a known bug); they are skipped unless `all_branches` is set.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

CHECKS = {
    "DL001": "parameter initialiser overwritten in place (dead code)",
    "DL002": "learned latents/queries initialised to a constant",
    "DL003": "softmax over the batch axis in a pooling module",
    "DL004": "softmax over a size-1 axis",
    "DL005": "learned latents/queries frozen (requires_grad=False)",
}
LATENT_NAME = re.compile(r"(latent|quer(y|ies))", re.I)
# Factories whose values are a random draw: overwriting them silently discards a stated distribution.
RANDOM_FACTORIES = {"randn", "rand", "randint", "normal", "randn_like", "rand_like", "randint_like", "randperm",
                    "bernoulli", "multinomial"}
CONSTANT_FACTORIES = {"zeros", "ones", "full", "zeros_like", "ones_like", "full_like"}
# torch.nn.init functions that overwrite every element of their argument
FULL_INITS = {"normal_", "uniform_", "trunc_normal_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
              "kaiming_normal_", "orthogonal_", "zeros_", "ones_", "constant_", "eye_", "dirac_", "sparse_"}
CONSTANT_INITS = {"zeros_", "ones_", "constant_"}
# in-place tensor methods that overwrite every element
FULL_METHODS = {"normal_", "uniform_", "zero_", "fill_", "copy_", "random_", "bernoulli_", "exponential_",
                "geometric_", "log_normal_", "cauchy_"}
SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", "site-packages", "build", "dist", ".tox", ".mypy_cache",
             "node_modules"}


@dataclass(frozen=True)
class LintFinding:
    path: str
    line: int
    id: str
    message: str

    def format(self) -> str:
        return f"{self.path}:{self.line}: {self.id} {self.message}"


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _last(name: str) -> str:
    return name.rpartition(".")[2]


def _is_parameter(call: ast.AST) -> bool:
    return isinstance(call, ast.Call) and _last(_dotted(call.func)) == "Parameter"


def _factories(node: ast.AST) -> list[ast.Call]:
    """torch factory calls anywhere in an expression (`torch.randn(n, d) * 0.02` -> [randn])."""
    names = RANDOM_FACTORIES | CONSTANT_FACTORIES | {"empty", "tensor", "eye", "arange", "linspace"}
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and _dotted(n.func).startswith(("torch.", "th."))
            and _last(_dotted(n.func)) in names]


def _target_name(node: ast.AST) -> str:
    return _dotted(node)


def _init_target(stmt: ast.stmt) -> tuple[str, ast.Call] | None:
    """(dotted target, call) when `stmt` overwrites every element of a tensor in place."""
    if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Call):
        return None
    call = stmt.value
    fn = _dotted(call.func)
    if _last(fn) in FULL_INITS and ("init." in fn or fn.startswith("init")) and call.args:
        return _target_name(call.args[0]), call
    if isinstance(call.func, ast.Attribute) and call.func.attr in FULL_METHODS:
        obj = call.func.value
        if isinstance(obj, ast.Attribute) and obj.attr == "data":  # x.data.normal_()
            obj = obj.value
        return _target_name(obj), call
    return None


def _mentions(node: ast.AST, target: str) -> bool:
    return any(_dotted(n) == target for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute)))


def _flatten(stmts: list[ast.stmt]) -> list[ast.stmt]:
    """Statements in order, looking into `with` bodies (`with torch.no_grad(): x.normal_()`)."""
    out = []
    for s in stmts:
        if isinstance(s, ast.With):
            out.extend(_flatten(s.body))
        else:
            out.append(s)
    return out


def _describe_init(call: ast.Call) -> str:
    fn = _last(_dotted(call.func))
    kw = {k.arg: ast.unparse(k.value) for k in call.keywords if k.arg}
    if fn == "normal_":
        args = [ast.unparse(a) for a in (call.args[1:] if "init" in _dotted(call.func) else call.args)]
        mean = kw.get("mean", args[0] if len(args) > 0 else "0")
        std = kw.get("std", args[1] if len(args) > 1 else "1")
        return f"normal(mean={mean}, std={std})"
    if fn == "trunc_normal_":
        return f"truncated normal(std={kw.get('std', '1')})"
    args = call.args[1:] if "init" in _dotted(call.func) else call.args
    return f"{fn.rstrip('_')}({', '.join([*map(ast.unparse, args), *(f'{k}={v}' for k, v in kw.items())])})"


def _is_string_switch(test: ast.expr) -> bool:
    """`mode == "seed"`, `cfg.init in ("a", "b")`, combinations with and/or."""
    if isinstance(test, ast.BoolOp):
        return any(_is_string_switch(v) for v in test.values)
    if isinstance(test, ast.Compare):
        parts = [test.left, *test.comparators]
        for p in parts:
            if isinstance(p, ast.Constant) and isinstance(p.value, str):
                return True
            if isinstance(p,
                          (ast.Tuple, ast.List, ast.Set)) and p.elts and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in p.elts):
                return True
    return False


def _shape_is_single(call: ast.Call) -> bool:
    """zeros(1, 1, d) / zeros(d) / zeros(1, d): one vector, no symmetry between latents."""
    dims = call.args[0].elts if call.args and isinstance(call.args[0], (ast.Tuple, ast.List)) else call.args
    if _last(_dotted(call.func)) == "full" and not (call.args and isinstance(call.args[0], (ast.Tuple, ast.List))):
        dims = call.args[:1]
    if len(dims) <= 1:
        return True
    return all(isinstance(d, ast.Constant) and d.value == 1 for d in dims[:-1])


class _FileLinter:
    def __init__(self, path: str, tree: ast.Module, source: str, all_branches: bool):
        self.path, self.tree, self.all_branches = path, tree, all_branches
        self.lines = source.splitlines()
        self.findings: list[LintFinding] = []
        # attributes that some statement anywhere in the file re-initialises in place (an HF-style
        # `_init_weights` may do it far from the constructor)
        self.reinitialised = {_last(t[0]) for n in ast.walk(tree)
                              if isinstance(n, ast.stmt) and (t := _init_target(n)) and t[0]}

    def add(self, line: int, id_: str, message: str) -> None:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        m = re.search(r"#\s*noqa(?::\s*([\w, ]+))?", text)
        if m and (m.group(1) is None or id_ in {c.strip() for c in m.group(1).split(",")}):
            return
        self.findings.append(LintFinding(self.path, line, id_, message))

    def run(self) -> list[LintFinding]:
        self.block(self.tree.body, None, False)
        return sorted(set(self.findings), key=lambda f: (f.line, f.id))

    # --- traversal ---
    def block(self, stmts: list[ast.stmt], cls: ast.ClassDef | None, switch: bool) -> None:
        if not switch or self.all_branches:
            self.check_block(stmts, cls)
        for s in stmts:
            if isinstance(s, ast.ClassDef):
                self.check_class(s)
                self.block(s.body, s, switch)
            elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.block(s.body, cls, switch)
            elif isinstance(s, ast.If):
                sw = switch or _is_string_switch(s.test)
                self.block(s.body, cls, sw)
                if s.orelse and not (len(s.orelse) == 1 and isinstance(s.orelse[0], ast.If)):
                    self.block(s.orelse, cls, sw)
                elif s.orelse:
                    self.block(s.orelse, cls, switch)
            elif isinstance(s, (ast.For, ast.AsyncFor, ast.While)):
                self.block(s.body, cls, switch)
                self.block(s.orelse, cls, switch)
            elif isinstance(s, (ast.With, ast.AsyncWith)):
                self.block(s.body, cls, switch)
            elif isinstance(s, ast.Try):
                for b in (s.body, s.orelse, s.finalbody, *[h.body for h in s.handlers]):
                    self.block(b, cls, switch)

    # --- DL001, DL002, DL005 ---
    def check_block(self, stmts: list[ast.stmt], cls: ast.ClassDef | None) -> None:
        flat = _flatten(stmts)
        for i, s in enumerate(flat):
            if not isinstance(s, (ast.Assign, ast.AnnAssign)) or not _is_parameter(s.value):
                continue
            targets = s.targets if isinstance(s, ast.Assign) else [s.target]
            if len(targets) != 1 or not _target_name(targets[0]):
                continue
            target = _target_name(targets[0])
            param: ast.Call = s.value
            data = param.args[0] if param.args else next((k.value for k in param.keywords if k.arg == "data"), None)
            facs = _factories(data) if data is not None else []
            overwrite = None
            for later in flat[i + 1:]:
                hit = _init_target(later)
                if hit and hit[0] == target:
                    overwrite = (later, hit[1])
                    break
                if _mentions(later, target):
                    break  # read or reassigned in between: the first value may be used
            random = [f for f in facs if _last(_dotted(f.func)) in RANDOM_FACTORIES]
            if overwrite and random:
                later, call = overwrite
                self.add(s.lineno, "DL001",
                         f"{target} = {ast.unparse(param)} is overwritten in place by {ast.unparse(call)} on line "
                         f"{later.lineno}: "
                         f"the {ast.unparse(random[0].func)} initialiser is dead code; the effective init is "
                         f"{_describe_init(call)}")
            is_latent = LATENT_NAME.search(_last(target)) is not None
            const = [f for f in facs if _last(_dotted(f.func)) in CONSTANT_FACTORIES]
            if is_latent and data is not None and const and not overwrite and not random \
                    and _last(target) not in self.reinitialised and not _shape_is_single(const[0]):
                self.add(s.lineno, "DL002", self._constant_message(target, ast.unparse(const[0]), cls))
            if is_latent and overwrite and _last(_dotted(overwrite[1].func)) in CONSTANT_INITS:
                self.add(overwrite[0].lineno, "DL002", self._constant_message(target, ast.unparse(overwrite[1]), cls))
            if is_latent and any(k.arg == "requires_grad" and isinstance(k.value,
                                                                         ast.Constant) and k.value.value is False
                                 for k in param.keywords):
                self.add(s.lineno, "DL005",
                         f"{target} is created with requires_grad=False: the learned latents never train")

    def _constant_message(self, target: str, init: str, cls: ast.ClassDef | None) -> str:
        msg = (f"{target} is initialised to a constant ({init}): every latent is the same vector, receives the same "
               "gradient and stays identical, so the latents cannot specialise")
        if cls is not None:
            attr = _last(target)
            for n in ast.walk(cls):
                if isinstance(n, ast.Call) and "norm" in _last(_dotted(n.func)).lower() and any(
                        _last(_dotted(a)) == attr or any(_last(_dotted(x)) == attr for x in ast.walk(a))
                        for a in n.args):
                    msg += (f"; the normalisation {ast.unparse(n.func)} on line {n.lineno} maps a constant row to "
                            "its bias, "
                            "erasing the latents entirely")
                    break
        return msg

    # --- DL003, DL004 ---
    def check_class(self, cls: ast.ClassDef) -> None:
        pooling = "pool" in cls.name.lower()
        width1 = set()
        for n in ast.walk(cls):
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.value, ast.Call) \
                    and _last(_dotted(n.value.func)) == "Linear":
                args = n.value.args
                out = args[1] if len(args) > 1 else next(
                    (k.value for k in n.value.keywords if k.arg == "out_features"), None)
                if isinstance(out, ast.Constant) and out.value == 1:
                    width1.add(_dotted(n.targets[0]))
        for fn in (n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            scorer_vars: dict[str, int] = {}
            for n in sorted((x for x in ast.walk(fn) if isinstance(x, (ast.Assign, ast.Call))),
                            key=lambda x: (x.lineno, x.col_offset)):
                if isinstance(n, ast.Assign):
                    if len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
                        v = n.value
                        name = n.targets[0].id
                        if isinstance(v, ast.Call) and _dotted(v.func) in width1:
                            scorer_vars[name] = n.lineno
                        else:
                            scorer_vars.pop(name, None)
                    continue
                dim, arg = self._softmax(n)
                if dim is None:
                    continue
                if pooling and dim == 0:
                    self.add(n.lineno, "DL003",
                             f"{ast.unparse(n)} in pooling module {cls.name} normalises over dim 0, the batch axis: "
                             "each "
                             "sample's pooling weights depend on the rest of the batch instead of summing to 1 over "
                             "its tokens")
                if dim in (-1,) and isinstance(arg, ast.Name) and arg.id in scorer_vars:
                    self.add(n.lineno, "DL004",
                             f"{ast.unparse(n)} normalises over the last axis of {arg.id}, the output of a width-1 "
                             "scorer "
                             f"(line {scorer_vars[arg.id]}): that axis has one element, so every weight is exactly 1; "
                             "squeeze(-1) first and softmax over the token axis")

    @staticmethod
    def _softmax(call: ast.Call) -> tuple[int | None, ast.expr | None]:
        """(dim, input) of a softmax call with a literal dim, else (None, None)."""
        fn = _dotted(call.func)
        name = _last(fn) if fn else (call.func.attr if isinstance(call.func, ast.Attribute) else "")
        if name not in ("softmax", "Softmax"):
            return None, None
        dim_node = next((k.value for k in call.keywords if k.arg == "dim"), None)
        method = (isinstance(call.func, ast.Attribute) and name == "softmax"
                  and not fn.startswith(("torch.", "F.", "nn.", "functional.")))
        if dim_node is None:
            if name == "Softmax":
                dim_node = call.args[0] if call.args else None
            elif method:
                dim_node = call.args[0] if call.args else None
            else:
                dim_node = call.args[1] if len(call.args) > 1 else None
        value = None
        if isinstance(dim_node, ast.Constant) and isinstance(dim_node.value, int):
            value = dim_node.value
        elif isinstance(dim_node, ast.UnaryOp) and isinstance(dim_node.op,
                                                              ast.USub) and isinstance(dim_node.operand, ast.Constant):
            value = -dim_node.operand.value
        if value is None:
            return None, None
        if name == "Softmax":
            return value, None
        inp = call.func.value if method else (call.args[0] if call.args else None)
        return value, inp


def python_files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise ConfigError(f"{p}: no such file or directory")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.py") if not (set(f.relative_to(p).parts[:-1]) & SKIP_DIRS))
            if not found:
                raise ConfigError(f"{p}: directory holds no Python files (*.py)")
            out.extend(found)
        elif p.suffix == ".py" or p.suffix == "":
            out.append(p)
        else:
            raise ConfigError(f"{p}: not a Python file")
    return out


def lint_source(source: str, path: str = "<string>", all_branches: bool = False) -> list[LintFinding]:
    tree = ast.parse(source, filename=path)
    return _FileLinter(path, tree, source, all_branches).run()


def lint_paths(paths: list[Path], all_branches: bool = False) -> tuple[list[LintFinding], list[str]]:
    """Findings over every .py file, and one error line per file that could not be read or parsed."""
    findings, errors = [], []
    for f in python_files(paths):
        try:
            source = f.read_text(encoding="utf-8")
            findings.extend(lint_source(source, str(f), all_branches))
        except SyntaxError as exc:
            errors.append(f"{f}:{exc.lineno or 0}: cannot parse ({exc.msg})")
        except (UnicodeDecodeError, OSError) as exc:
            errors.append(f"{f}: cannot read ({exc.__class__.__name__})")
        except (RecursionError, MemoryError):  # the parser or the checks' tree walk ran out of depth
            errors.append(f"{f}: nested too deeply to check (Python's recursion limit)")
    return findings, errors

"""Checking a hand derivation: a candidate Jacobian (a function or an index formula) against the truth.

An index formula is written the way it is derived by hand::

    "dS[i,j]/dQ[c,d] = S[i,j] * (delta(i,c) * K[d,j] - sum_s(S[c,s] * K[d,s]))"

The left side ``dY[i,j]/dX[c,d]`` names one index per axis of Y and then one per axis
of X, so the formula describes the Jacobian J[i,j,c,d] (shape Y.shape + X.shape). A
scalar Y or X takes no brackets (``dL/dQ[c,d]``). The right side is read by a small
grammar of its own -- it is never run as Python -- and may use only::

    2, 0.5, 1e-3         numbers
    C                    a scalar (0-d) argument of f or env entry, e.g. env={"C": 0.5}
    S[i,j]               an entry of a tensor named by an argument of f or a key of env;
                         one index per axis; a repeated index takes the diagonal (M[i,i])
    delta(a,b)           1 where a == b, else 0 (also between indices of different lengths)
    sum_s(...)           the sum over index s; sum_st(...) sums over s and t
    exp log sqrt tanh    elementwise functions of one argument, as are abs, sin and cos
    + - * /              arithmetic, unary minus, parentheses
    x ** p               a power whose exponent p is a number (or an index-free expression)

An index is one letter, optionally followed by digits (``i``, ``c``, ``i2``). Indices
appear only inside brackets, ``delta`` and the ``sum_`` suffix; every index of the right
side must be on the left side or summed. Anything else (attributes, calls of other
functions, strings, comprehensions, comparisons, ...) is refused with a FormulaError that
quotes the offending piece. Formulas are limited to 10,000 characters and 100 levels of
nesting.

Evaluation gives each index its own axis and multiplies by numpy broadcasting, in float64;
no intermediate may exceed ``config.max_jacobian_bytes``.
"""
import ast
import inspect
import re

import numpy as np

from .config import config
from .errors import FormulaError

__all__ = ["FormulaReport", "check_formula", "evaluate_formula"]

MAX_CHARS = 10_000
MAX_DEPTH = 100

_FUNCS = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "abs": np.abs, "sin": np.sin,
          "cos": np.cos}
_INDEX = re.compile(r"[A-Za-z][0-9]*")
_GRAMMAR = ("a formula may use numbers, Name[i,j], scalar names, delta(a,b), sum_k(...), "
            + "/".join(_FUNCS) + "(...), + - * /, ** with a numeric exponent and parentheses")
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.MatMult: "@",
        ast.FloorDiv: "//", ast.Mod: "%", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^",
        ast.BitAnd: "&"}
_REFUSED = {
    ast.Attribute: "attribute access", ast.ListComp: "a list comprehension", ast.SetComp: "a set comprehension",
    ast.DictComp: "a dict comprehension", ast.GeneratorExp: "a generator expression", ast.Lambda: "a lambda",
    ast.JoinedStr: "an f-string", ast.FormattedValue: "an f-string field", ast.NamedExpr: "an assignment (:=)",
    ast.Starred: "a starred expression", ast.Compare: "a comparison", ast.BoolOp: "a boolean operator (and/or)",
    ast.IfExp: "a conditional expression (x if c else y)", ast.Dict: "a dict literal", ast.Set: "a set literal",
    ast.List: "a list literal", ast.Tuple: "a tuple", ast.Slice: "a slice", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield from",
}


def _err(msg):
    return FormulaError(f"check_formula: {msg}")


def _clip(text, width=60):
    text = " ".join(text.split())  # one line, whatever the formula's layout: the CLI prints one line per error
    return text if len(text) <= width else text[:width - 3] + "..."


def _tokens(s):
    """'st' -> ['s', 't']; 'i1j2' -> ['i1', 'j2']; None if s is not made of index names."""
    toks = _INDEX.findall(s)
    return toks if toks and "".join(toks) == s else None


class _Source:
    """A piece of the formula as parsed, and where it starts in the whole formula (for quoting)."""

    def __init__(self, text, start):
        self.text, self.start = text, start
        lines = text.split("\n")
        self._lines, self._line_start = lines, [0]
        for l in lines:
            self._line_start.append(self._line_start[-1] + len(l) + 1)

    def _char(self, lineno, col_offset):
        # ast offsets count UTF-8 bytes; turn them into characters of the formula
        line = self._lines[lineno - 1]
        return self.start + self._line_start[lineno - 1] + len(line.encode()[:col_offset].decode(errors="ignore"))

    def quote(self, node):
        seg = ast.get_source_segment(self.text, node)
        if seg is None:
            return "'?'"
        return f"'{_clip(seg)}' (at character {self._char(node.lineno, node.col_offset) + 1})"


def _parse(text, start, what):
    """ast.parse in eval mode, every failure (syntax, depth, size) turned into a FormulaError."""
    src = _Source(text, start)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        off = max((e.offset or 1) - 1, 0)
        if e.lineno and e.lineno > 1:
            off += src._line_start[min(e.lineno, len(src._lines)) - 1]
        near = text[off:off + 20]
        msg = (e.msg or "invalid syntax").split(" (<unknown>")[0]
        where = f" near '{_clip(near, 24)}' (at character {start + off + 1})" if near.strip() else ""
        raise _err(f"cannot read {what} '{_clip(text)}': {msg}{where}; {_GRAMMAR}") from None
    except (RecursionError, MemoryError):
        raise _err(f"{what} is nested too deeply to read; formulas may nest at most {MAX_DEPTH} levels") from None
    except Exception as e:  # noqa: BLE001 - whatever else the parser raises is a formula error, never a traceback
        raise _err(f"cannot read {what} '{_clip(text)}': {_clip(str(e).split(';')[0], 120)}") from None
    # depth without counting a + b + c ... (or a * b * c ...) chains, which are read as one flat level
    stack = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _err(f"{what} nests more than {MAX_DEPTH} levels deep (at {src.quote(node)}); split it up")
        for child in ast.iter_child_nodes(node):
            same = (isinstance(node, ast.BinOp) and child is node.left and isinstance(child, ast.BinOp)
                    and _group(child.op) is not None and _group(child.op) == _group(node.op))
            stack.append((child, depth if same else depth + 1))
    return tree.body, src


def _group(op):
    return "add" if isinstance(op, (ast.Add, ast.Sub)) else "mul" if isinstance(op, (ast.Mult, ast.Div)) else None


def _split(formula):
    """Position of the '=' between the left and the right side (depth 0, not part of ==, <=, :=, ...), or None."""
    depth = 0
    for k, ch in enumerate(formula):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "=" and depth == 0:
            prev = formula[k - 1] if k else ""
            nxt = formula[k + 1] if k + 1 < len(formula) else ""
            if prev not in ("=", "<", ">", "!", ":") and nxt != "=":
                return k
    return None


def _side(node, src, lhs_text):
    """dY[i,j] (or a bare dY for a scalar) -> ('Y', ['i', 'j'])."""
    bad = _err(f"the left side '{_clip(lhs_text)}' must look like dY[i,j]/dX[r,s]: one index per axis of Y, "
               f"then one per axis of X (a scalar takes no brackets: dL/dX[r,s])")
    if isinstance(node, ast.Name):
        name, idx = node.id, []
    elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        name = node.value.id
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        idx = []
        for e in elts:
            if not (isinstance(e, ast.Name) and _INDEX.fullmatch(e.id)):
                raise _err(f"the left side has {src.quote(e)} where an index belongs; indices are one letter, "
                           f"optionally followed by digits (i, j, c2)")
            idx.append(e.id)
    else:
        raise bad
    if not name.startswith("d") or len(name) < 2:
        raise bad
    return name[1:], idx


def _parse_lhs(formula, eq):
    text = formula[:eq]
    lead = len(text) - len(text.lstrip())
    if not text.strip():
        raise _err("the left side before '=' is empty; write dY[i,j]/dX[r,s] = ...")
    node, src = _parse(text.strip(), lead, "the left side")
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)):
        raise _err(f"the left side '{_clip(text)}' must look like dY[i,j]/dX[r,s]: the derivative of Y with "
                   f"respect to X")
    y, yi = _side(node.left, src, text)
    x, xi = _side(node.right, src, text)
    seen = yi + xi
    dup = sorted({l for l in seen if seen.count(l) > 1})
    if dup:
        raise _err(f"the left side '{_clip(text)}' uses index {', '.join(dup)} more than once; give every axis of Y "
                   f"and X its own index")
    return y, yi, x, xi


def _parse_indices(indices):
    if isinstance(indices, str):
        toks = [t.strip() for t in indices.split(",")] if "," in indices else _tokens(indices.replace(" ", ""))
    else:
        try:
            toks = list(indices)
        except TypeError:
            toks = None
    if toks is None or not all(isinstance(t, str) and _INDEX.fullmatch(t) for t in toks):
        raise _err(f"indices={indices!r} must name the output indices, e.g. 'ijrs' or ['i', 'j', 'r', 's'] "
                   f"(one letter each, optionally followed by digits)")
    if len(set(toks)) != len(toks):
        raise _err(f"indices={indices!r} repeats an index; give every axis its own")
    return toks


class _Node:
    """One node of the checked formula: op, children, payload, and the free indices in order."""
    __slots__ = ("data", "kids", "letters", "op")

    def __init__(self, op, kids, data, letters):
        self.op, self.kids, self.data, self.letters = op, kids, data, tuple(letters)


def _union(*groups):
    return tuple(dict.fromkeys(l for g in groups for l in g))


class _Compiler:
    """AST of the right side -> _Node tree, refusing everything outside the grammar."""

    def __init__(self, src, names, out_idx, used_letters):
        self.src, self.names, self.out = src, names, out_idx
        self.used = used_letters
        self.values = {}
        self.sizes, self.size_from = {}, {}
        self.first = {}

    def refuse(self, node, what, remedy=_GRAMMAR):
        raise _err(f"{what} {self.src.quote(node)} is not allowed in a formula; {remedy}")

    def known(self):
        return ", ".join(sorted(k for k in self.names if isinstance(k, str))) or "none"

    def value(self, name, node):
        if name not in self.values:
            raw = self.names[name]
            try:
                arr = np.asarray(raw)
            except (TypeError, ValueError, OverflowError) as e:  # an env entry numpy cannot read
                raise _err(f"{name!r} (used at {self.src.quote(node)}) is not an array: {_clip(str(e), 80)}") from None
            if arr.dtype.kind not in "biuf":
                raise _err(f"{name!r} (used at {self.src.quote(node)}) has dtype {arr.dtype}; the checker works in "
                           f"float64, so give real numbers")
            self.values[name] = arr.astype(np.float64)
        return self.values[name]

    def unknown(self, node, name):
        if name in self.used and name not in self.names:
            raise _err(f"the index {name} stands alone at {self.src.quote(node)}; indices appear only inside "
                       f"brackets Name[i,j], delta(a,b) and the sum_ suffix (a scalar constant goes in env)")
        raise _err(f"the formula uses {name!r} at {self.src.quote(node)}, which is neither an argument of f nor in "
                   f"env (known names: {self.known()}); pass it in env={{{name!r}: ...}}")

    def note(self, letter, node):
        self.first.setdefault(letter, node)  # the ast node where an index first appears, quoted in errors

    def build(self, node, bound=frozenset()):
        if isinstance(node, ast.Constant):
            v = node.value
            if v is Ellipsis:
                raise _err(f"the right side {self.src.quote(node)} is a placeholder, not a formula; write the "
                           f"derivative out, e.g. dA[i,j]/dQ[r,s] = delta(i,r) * K[s,j]")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.refuse(node, "the string constant" if isinstance(v, (str, bytes)) else
                            f"the constant ({type(v).__name__})", "only real numbers are constants")
            try:
                return _Node("const", (), float(v), ())
            except OverflowError:
                self.refuse(node, "the number", "it does not fit in float64")
        if isinstance(node, ast.Name):
            name = node.id
            if name.startswith("__"):
                self.refuse(node, "the name", "names with double underscores are never formula names")
            if name in self.names:
                arr = self.value(name, node)
                if arr.ndim:
                    raise _err(f"{name} at {self.src.quote(node)} is a tensor of shape {arr.shape}; index it with "
                               f"{arr.ndim} index/indices, e.g. {name}[{','.join('ijkl'[:arr.ndim] or 'i')}]")
                return _Node("scalar", (), name, ())
            if name in _FUNCS or name == "delta" or name.startswith("sum_"):
                self.refuse(node, f"{name} without parentheses", f"call it: {name}(...)")
            self.unknown(node, name)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Call):
            return self.call(node, bound)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                kid = self.build(node.operand, bound)
                return _Node("neg", (kid,), None, kid.letters)
            if isinstance(node.op, ast.UAdd):
                return self.build(node.operand, bound)
            sym = {ast.Invert: "~", ast.Not: "not"}.get(type(node.op), "?")
            self.refuse(node, f"the operator '{sym}' in", "unary minus is the only unary operator")
        if isinstance(node, ast.BinOp):
            return self.binop(node, bound)
        what = _REFUSED.get(type(node), f"a {type(node).__name__} expression")
        self.refuse(node, what)

    def subscript(self, node):
        base = node.value
        if not isinstance(base, ast.Name):
            self.refuse(node, "the subscript", "brackets index a tensor given by name: Name[i,j]")
        name = base.id
        if name.startswith("__"):
            self.refuse(base, "the name", "names with double underscores are never formula names")
        if name not in self.names:
            if name in _FUNCS or name == "delta" or name.startswith("sum_"):
                self.refuse(node, f"brackets after the function {name} in", f"call it with parentheses: {name}(...)")
            self.unknown(base, name)
        arr = self.value(name, node)
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        letters = []
        for e in elts:
            if not (isinstance(e, ast.Name) and _INDEX.fullmatch(e.id)):
                self.refuse(e, "the index", "indices inside brackets are letters, optionally followed by digits "
                                            "(i, j, c2)")
            letters.append(e.id)
        if len(letters) != arr.ndim:
            raise _err(f"{name} has shape {arr.shape} ({arr.ndim} axes) but {self.src.quote(node)} gives it "
                       f"{len(letters)} index/indices; use one per axis")
        for l, n in zip(letters, arr.shape):
            self.note(l, node)
            if l in self.sizes and self.sizes[l] != n:
                raise _err(f"index {l} has length {self.sizes[l]} from {self.src.quote(self.size_from[l])} but "
                           f"length {n} in {self.src.quote(node)} ({name} has shape {arr.shape})")
            self.sizes[l], self.size_from[l] = n, self.size_from.get(l, node)
        return _Node("tensor", (), (name, tuple(letters)), _union(letters))

    def call(self, node, bound):
        f = node.func
        if not isinstance(f, ast.Name):
            self.build(f, bound)  # refuses the attribute, subscript, ... that is being called
            self.refuse(f, "calling", "only the formula functions can be called")
        name = f.id
        if name.startswith("__"):
            self.refuse(f, "the name", "names with double underscores are never formula names")
        for a in node.args:
            if isinstance(a, ast.Starred):
                self.refuse(a, "the starred argument", "write the arguments out")
        if node.keywords:
            self.refuse(node.keywords[0], "the keyword argument", f"{name} takes positional arguments only")
        if name == "delta":
            if len(node.args) != 2:
                self.refuse(node, "delta with other than two arguments", "write delta(a,b) with two indices")
            for a in node.args:
                if not (isinstance(a, ast.Name) and _INDEX.fullmatch(a.id)):
                    self.refuse(a, "the delta argument", "delta(a,b) takes two indices (letters such as i, c2)")
                self.note(a.id, node)
            a, b = node.args[0].id, node.args[1].id
            return _Node("delta", (), (a, b), _union([a, b]))
        if name.startswith("sum_"):
            letters = _tokens(name[4:])
            if letters is None:
                self.refuse(f, "the sum", "name the summed indices after sum_: sum_s(...), sum_st(...)")
            if len(node.args) != 1:
                self.refuse(node, f"{name} with {len(node.args)} arguments", f"write {name}(expression)")
            dup = sorted({l for l in letters if letters.count(l) > 1})
            if dup:
                self.refuse(f, "the sum", f"it names {', '.join(dup)} twice; sum over each index once")
            clash = [l for l in letters if l in (self.out or ())]
            if clash:
                self.refuse(f, "the sum", f"{', '.join(clash)} is an index of the left side; sum over another letter")
            inner = [l for l in letters if l in bound]
            if inner:
                self.refuse(f, "the sum", f"an enclosing sum already sums over {', '.join(inner)}; "
                                          f"use another letter")
            for l in letters:
                self.note(l, node)
            kid = self.build(node.args[0], bound | set(letters))
            return _Node("sum", (kid,), tuple(letters), [l for l in kid.letters if l not in letters])
        if name in _FUNCS:
            if len(node.args) != 1:
                self.refuse(node, f"{name} with {len(node.args)} arguments", f"{name} takes one argument")
            kid = self.build(node.args[0], bound)
            return _Node("func", (kid,), name, kid.letters)
        if name in self.names:
            self.refuse(node, f"calling the tensor {name} in", f"index it with brackets: {name}[...]")
        self.refuse(f, "the function", f"the functions are delta, sum_<indices>, {', '.join(_FUNCS)}")

    def binop(self, node, bound):
        sym = _OPS.get(type(node.op), "?")
        group = _group(node.op)
        if group is not None:
            parts = []
            while isinstance(node, ast.BinOp) and _group(node.op) == group:  # a - b + c: flatten the chain
                parts.append((_OPS[type(node.op)], node.right))
                node = node.left
            parts.append(("+" if group == "add" else "*", node))
            parts.reverse()
            kids = [self.build(n, bound) for _, n in parts]
            ops = [o for o, _ in parts]
            return _Node(group, kids, ops, _union(*(k.letters for k in kids)))
        if isinstance(node.op, ast.Pow):
            base = self.build(node.left, bound)
            p = self.build(node.right, bound)
            if p.letters:
                self.refuse(node.right, "the exponent", "exponents are numbers; for a tensor exponent write "
                                                        "exp(y * log(x))")
            return _Node("pow", (base, p), None, base.letters)
        self.refuse(node, f"the operator '{sym}' in", _GRAMMAR)


class _Formula:
    """A parsed and checked formula; evaluate() gives the tensor with one axis per output index."""

    def __init__(self, formula, names, indices=None):
        if not isinstance(formula, str):
            raise _err(f"the formula must be a string like 'dY[i,j]/dX[r,s] = ...', not {type(formula).__name__}")
        if len(formula) > MAX_CHARS:
            raise _err(f"the formula has {len(formula):,} characters; formulas are limited to {MAX_CHARS:,}")
        eq = _split(formula)
        self.lhs = _parse_lhs(formula, eq) if eq is not None else None
        out = _parse_indices(indices) if indices is not None else (self.lhs[1] + self.lhs[3] if self.lhs else None)
        if out is None:
            raise _err("give the output indices, either as a left side 'dY[i,j]/dX[r,s] = ...' or with "
                       "indices='ijrs'")
        self.out = out
        if not isinstance(names, dict):
            raise _err(f"names/env must be a dict from name to array, not {type(names).__name__}")
        text = formula[eq + 1:] if eq is not None else formula
        start = (eq + 1 if eq is not None else 0) + len(text) - len(text.lstrip())
        if not text.strip():
            raise _err("the right side after '=' is empty; write the derivative there")
        tree, src = _parse(text.strip(), start, "the right side")
        used = set(out)
        for n in ast.walk(tree):
            if isinstance(n, ast.Subscript):
                sl = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
                used.update(e.id for e in sl if isinstance(e, ast.Name))
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
                if n.func.id == "delta":
                    used.update(a.id for a in n.args if isinstance(a, ast.Name))
                elif n.func.id.startswith("sum_"):
                    used.update(_tokens(n.func.id[4:]) or [])
        self.comp = _Compiler(src, names, out, used)
        self.root = self.comp.build(tree)

    def evaluate(self, shape=None):
        comp, out = self.comp, self.out
        sizes, size_from = dict(comp.sizes), dict(comp.size_from)
        if shape is not None:
            shape = tuple(int(n) for n in shape)
            if len(shape) != len(out):
                raise _err(f"{len(out)} output indices {out} for a Jacobian of shape {shape} (out.shape + in.shape); "
                           f"give one index per axis")
            for l, n in zip(out, shape):
                if l in sizes and sizes[l] != n:
                    raise _err(f"index {l} has length {n} in the Jacobian of shape {shape} but length {sizes[l]} "
                               f"in {comp.src.quote(size_from[l])}")
                sizes[l] = n
        free = [l for l in self.root.letters if l not in out]
        if free:
            raise _err(f"index/indices {free} are neither on the left side nor summed (first at "
                       f"{comp.src.quote(comp.first[free[0]])}); wrap the product in sum_{free[0]}(...)")
        lost = sorted({l for l in list(comp.first) + out if l not in sizes})
        if lost:
            where = f" (at {comp.src.quote(comp.first[lost[0]])})" if lost[0] in comp.first else " (on the left side)"
            raise _err(f"cannot tell the length of index/indices {lost}{where}: an index needs a tensor indexed by "
                       f"it, or a place on the left side with the Jacobian's shape")
        limit = config.max_jacobian_bytes // 8
        biggest = max([_entries(self.root, sizes), int(np.prod([sizes[l] for l in out]))])
        if biggest > limit:
            raise _err(f"evaluating the formula needs an array of {biggest:,} float64 entries, over "
                       f"config.max_jacobian_bytes ({config.max_jacobian_bytes:,} bytes); use smaller inputs")
        with np.errstate(all="ignore"):  # NaN/Inf show up as mismatches in the report, not as warnings
            arr, letters = _eval(self.root, comp.values, sizes)
            arr = _expand(arr, letters, out, sizes)
        return np.array(np.broadcast_to(arr, [sizes[l] for l in out]), dtype=np.float64)


def _entries(node, sizes):
    """Most entries any intermediate of the tree holds (its free indices, and summed ones below a sum)."""
    here = int(np.prod([sizes[l] for l in node.letters])) if node.letters else 1
    return max([here] + [_entries(k, sizes) for k in node.kids])


def _expand(arr, letters, target, sizes):
    """Put arr's axes (one per letter) in target order, with size-1 axes for the target letters it lacks."""
    order = [l for l in target if l in letters]
    arr = np.transpose(arr, [letters.index(l) for l in order]) if order else arr
    return arr.reshape([sizes[l] if l in letters else 1 for l in target])


def _eval(node, values, sizes):
    """-> (array with one axis per letter, letters)."""
    op = node.op
    if op == "const":
        return np.float64(node.data), ()
    if op == "scalar":
        return values[node.data], ()
    if op == "tensor":
        name, ls = node.data
        arr, uniq = values[name], list(dict.fromkeys(ls))
        if len(uniq) != len(ls):  # M[i,i]: the diagonal
            arr = np.einsum("".join(chr(97 + uniq.index(l)) for l in ls) + "->"
                            + "".join(chr(97 + k) for k in range(len(uniq))), arr)
        return arr, tuple(uniq)
    if op == "delta":
        a, b = node.data
        if a == b:
            return np.ones(sizes[a]), (a,)
        return np.eye(sizes[a], sizes[b]), (a, b)
    if op == "sum":
        arr, ls = _eval(node.kids[0], values, sizes)
        for l in node.data:
            if l in ls:
                arr = np.sum(arr, axis=ls.index(l))
                ls = ls[:ls.index(l)] + ls[ls.index(l) + 1:]
            else:  # the summand does not depend on l: each of its terms is counted len(l) times
                arr = arr * sizes[l]
        return arr, ls
    if op == "func":
        arr, ls = _eval(node.kids[0], values, sizes)
        return _FUNCS[node.data](arr), ls
    if op == "neg":
        arr, ls = _eval(node.kids[0], values, sizes)
        return -arr, ls
    if op == "pow":
        arr, ls = _eval(node.kids[0], values, sizes)
        p, _ = _eval(node.kids[1], values, sizes)
        return np.power(arr, p), ls
    # a flat chain of + - or * /
    acc, ls = _eval(node.kids[0], values, sizes)
    for sym, kid in zip(node.data[1:], node.kids[1:]):
        y, ly = _eval(kid, values, sizes)
        target = _union(ls, ly)
        a, b = _expand(acc, ls, target, sizes), _expand(y, ly, target, sizes)
        acc = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[sym](a, b)
        ls = target
    return acc, ls


def evaluate_formula(formula, names, indices=None, shape=None):
    """Evaluate an index formula to a float64 tensor whose axes are ``indices`` (the left side's, by default).

    ``names`` maps the names the formula may use to arrays (scalars for bare names);
    ``shape``, when given, is the shape of the result and fixes the lengths of the output
    indices. Raises FormulaError for anything outside the grammar in the module doc.
    """
    return _Formula(formula, names, indices).evaluate(shape)


class FormulaReport:
    """Result of check_formula: ok, max error, worst index and the first mismatching entries."""

    def __init__(self, ok, max_error, worst, mismatches, shape, message="", n_bad=0):
        self.ok, self.max_error, self.worst, self.mismatches = ok, max_error, worst, mismatches
        self.shape, self.message, self.n_bad = shape, message, n_bad

    def __bool__(self):
        return self.ok

    def __str__(self):
        if self.message:
            return f"WRONG: {self.message}"
        head = (f"{'CORRECT' if self.ok else 'WRONG'}: max |given - expected| = {self.max_error:.3g}"
                + ("" if self.ok else f" at index {self.worst}; {self.n_bad} of {int(np.prod(self.shape))} "
                                      f"entries differ"))
        rows = [f"  at {idx}: expected {e: .6g}, given {g: .6g}" for idx, e, g in self.mismatches]
        return "\n".join([head] + rows)

    __repr__ = __str__


def _params(f):
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in sig.parameters.values() if p.kind in kinds]


def check_formula(f, candidate, *args, argnum=0, env=None, indices=None, tol=1e-8, max_show=5):
    """Compare a hand-derived Jacobian of ``f`` w.r.t. argument ``argnum`` with the true one.

    The Jacobian J = df(*args)/d args[argnum] has shape out.shape + in.shape:
    J[i.., r..] = d out[i..] / d args[argnum][r..]. ``candidate`` is a function of the same
    arguments returning that tensor, or an index formula (see the module doc) whose names
    are f's argument names plus the keys of ``env``. The truth is jactensor's chained full
    Jacobian. Returns a FormulaReport with the worst index and the first ``max_show``
    mismatching entries; entries where the candidate is NaN or Inf count as mismatches.
    A malformed formula raises FormulaError.
    """
    from .transforms import jacobian
    formula = None
    if isinstance(candidate, str):
        params = _params(f)
        names = dict(zip(params, args))
        if env is not None and not isinstance(env, dict):
            raise _err(f"env must be a dict from name to array (e.g. {{'S': S}}), not {type(env).__name__}")
        names.update(env or {})
        formula = _Formula(candidate, names, indices)  # grammar errors before any derivative is computed
        wrt = formula.lhs[2] if formula.lhs else None
        if (wrt in params and isinstance(argnum, int) and -len(params) <= argnum < len(params)
                and params[argnum] != wrt):
            raise _err(f"the left side differentiates with respect to {wrt} (argument {params.index(wrt)} of f), "
                       f"but argnum={argnum} is {params[argnum]}; pass argnum={params.index(wrt)} or fix the left "
                       f"side")
    elif not callable(candidate):
        raise _err(f"the candidate must be an index formula (a string) or a function of f's arguments, "
                   f"not {type(candidate).__name__}")
    expected = np.asarray(jacobian(f, argnums=argnum)(*args))
    if formula is not None:
        if formula.lhs and indices is None:
            in_shape = np.shape(args[argnum])
            out_shape = expected.shape[:expected.ndim - len(in_shape)]
            y, yi, x, xi = formula.lhs
            if len(yi) != len(out_shape) or len(xi) != len(in_shape):
                raise _err(f"the left side gives d{y} {len(yi)} index/indices and d{x} {len(xi)}, but f's output has "
                           f"shape {out_shape} and argument {argnum} has shape {in_shape}; give one index per axis")
        given = formula.evaluate(expected.shape)
    else:
        given = np.asarray(candidate(*args), dtype=np.float64)
    if given.shape != expected.shape:
        return FormulaReport(False, np.inf, None, [], expected.shape,
                             f"the candidate has shape {given.shape}, the Jacobian has shape {expected.shape} "
                             f"(out.shape + in.shape)")
    with np.errstate(invalid="ignore"):
        diff = np.abs(given - expected)
        bad = np.argwhere(~(diff <= tol * max(1.0, float(np.max(np.abs(expected), initial=0.0)))))  # NaN is bad
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)) if diff.size else ()
    shown = [(tuple(int(i) for i in b), float(expected[tuple(b)]), float(given[tuple(b)])) for b in bad[:max_show]]
    return FormulaReport(len(bad) == 0, float(diff.max()) if diff.size else 0.0, worst, shown, expected.shape,
                         n_bad=len(bad))

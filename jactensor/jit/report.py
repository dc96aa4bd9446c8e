"""What a compiled program does, in words: ``jt.jit(f).explain(*args)``."""
from ..memory import fmt_bytes

__all__ = ["JitExplanation"]


class JitExplanation:
    """Summary of the program a call replays: numpy calls (primitive implementations, contractions,
    dense materialisations, other numpy operations), the buffers the derivative part reads from the
    primal part (kept for the backward pass) and their bytes, the peak of live buffers, the guards,
    the constants and the compile time; ``source`` is the generated replay function."""

    def __init__(self, compiled, prog):
        self.name = compiled.__name__
        self.n_calls, self.n_primitive_calls = prog.n_calls, prog.n_primitive_calls
        self.n_contractions, self.n_embeds = prog.n_contractions, prog.n_embeds
        self.saved_buffers, self.saved_bytes = len(prog.saved_slots), prog.saved_bytes
        self.peak_bytes = prog.peak_bytes
        self.guards = prog.describe_guards()
        self.n_consts, self.const_bytes = prog.n_consts, prog.const_bytes
        self.compile_seconds = prog.trace_seconds + prog.build_seconds
        self.trace_seconds, self.build_seconds = prog.trace_seconds, prog.build_seconds
        self.programs_held = compiled._cache_size()
        self.source = prog.source

    def __str__(self):
        other = self.n_calls - self.n_primitive_calls - self.n_contractions - self.n_embeds
        lines = [
            f"{self.name}: compiled program",
            f"  numpy calls per replay: {self.n_calls} ({self.n_primitive_calls} primitive implementations, "
            f"{self.n_contractions} contractions, {self.n_embeds} dense materialisations, {other} other numpy "
            f"operations)",
            f"  buffers kept for the backward pass: {self.saved_buffers} ({fmt_bytes(self.saved_bytes)}); "
            f"peak of live buffers {fmt_bytes(self.peak_bytes)}",
            f"  constants: {self.n_consts} ({fmt_bytes(self.const_bytes)})",
            f"  compile time: {self.compile_seconds * 1e3:.1f} ms (recording {self.trace_seconds * 1e3:.1f} ms, "
            f"optimising and generating code {self.build_seconds * 1e3:.1f} ms); {self.programs_held} program(s) "
            f"held",
            f"  guards: {len(self.guards)}" + ("" if self.guards else " (the replay never re-checks a value)"),
        ]
        lines += [f"    {k}. {g}" for k, g in enumerate(self.guards)]
        lines.append("")
        lines.append("replay function:")
        lines += ["  " + l for l in self.source.rstrip().splitlines()]
        return "\n".join(lines)

    __repr__ = __str__

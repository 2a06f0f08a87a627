#!/usr/bin/env python3
"""Random conformance scripts for tether's Go adapter (see ../SCRIPT.md).

Python 3 standard library only. The output depends only on the options:
the same --seed and options always print the same script.

    python3 gen.py --seed 4242 --ops 60 > /tmp/x.script
    python3 gen.py --seed 100 --count 5 --outdir /tmp/scripts    # 100.script .. 104.script

Every script is *robust* in the sense of SCRIPT.md ("Robust scripts"): its
transcript is the same for any lateness of its statements below the
tolerance (25 ms), so Go prints the same transcript on every idle run, and the
reference interpreter exits 0 rather than 4. How the generator ensures it:

* Phases. Virtual time L is the sum of the sleeps so far; the statements
  between two sleeps (a phase) all run within a few ms of T0 + L.
* Deadlines come in three sorts:
    expired  -- at or before L when made (with_timeout offset <= 0,
                with_deadline offset <= L): done as soon as made;
    firing   -- L + one of TIMER_SLOTS ms, each slot used once per phase, so
                two timers of a phase are >= 60 ms apart and >= 50 ms after
                the phase's statements;
    far      -- an hour or more ahead: never fires during the script.
* Every sleep is at least 320 ms, so a phase's timers have all fired (by
  >= 150 ms) before the next phase starts.
* WithDeadline compares the parent's deadline with the new one. The generator
  keeps a model of every context's deadline (exact, or "nominal + lateness of
  the statement that made it") and rerolls any offset for which that
  comparison could come out either way (the rule of SCRIPT.md).
* after_func actions only cancel a "free" context: a with_cancel or
  with_cancel_cause whose ancestors cannot be cancelled, and which is the
  target of one after_func at most. No two asynchronous cancellations ever
  race for the same context.
"""

import argparse
import os
import random
import sys

TOLERANCE = 25                              # ms, as in the reference interpreter
TIMER_SLOTS = (50, 110, 170)                # firing deadlines: L + slot
SLEEPS = (320, 350, 400)
FAR_ABSOLUTE = (3_600_000, 7_200_000, 36_000_000, 3_600_000_000)      # with_deadline, from T0
FAR_RELATIVE = (3_600_000, 7_200_000, 1_000_000_000, 3_600_000_000)   # with_timeout, from the call
EXPIRED_RELATIVE = (0, 0, -50, -3_600_000)
VALUES = ("v1", "v2", "v3", "red", "blue", "x.y", "a:b", "p/q", "n-1", "0")
CANCELLABLE = ("with_cancel", "with_cancel_cause", "with_deadline", "with_deadline_cause",
               "with_timeout", "with_timeout_cause")
ROOTS = ("background", "todo")

assert min(SLEEPS) - max(TIMER_SLOTS) >= 150
assert min(b - a for a, b in zip(TIMER_SLOTS, TIMER_SLOTS[1:])) > 2 * TOLERANCE


class Deadline:
    """A deadline as the timing model sees it: `nominal` ms after T0, plus the
    lateness of the statement that made it unless `exact`."""

    def __init__(self, nominal, exact, phase, seq):
        self.nominal, self.exact, self.phase, self.seq = nominal, exact, phase, seq

    def before(self, other):
        """The answer to Go's `self.Before(other)`, or None when it depends on
        lateness (each lateness in (0, TOLERANCE), growing within a phase)."""
        diff = self.nominal - other.nominal
        if self.exact and other.exact:
            return diff < 0
        if self.exact:                  # other gets + lateness
            return None if 0 < diff < TOLERANCE else diff <= 0
        if other.exact:                 # self gets + lateness
            return None if -TOLERANCE < diff < 0 else diff <= -TOLERANCE
        if self.phase == other.phase:   # both late, the later statement more so
            if self.seq < other.seq:    # other = self + (diff) + a lateness gap in (0, tol)
                return None if 0 < diff < TOLERANCE else diff <= 0
            return None if -TOLERANCE < diff < 0 else diff <= -TOLERANCE
        return None if -TOLERANCE < diff < TOLERANCE else diff < 0


class Node:
    def __init__(self, name, kind, parent, deadline):
        self.name, self.kind, self.parent, self.deadline = name, kind, parent, deadline

    def cancellable_above(self):
        """Whether some ancestor's cancellation reaches this context."""
        p = self.parent
        while p is not None and p.kind != "without_cancel":
            if p.kind in CANCELLABLE:
                return True
            p = p.parent
        return False


class Generator:
    def __init__(self, opts):
        self.o = opts
        self.rng = random.Random(opts.seed)
        self.out = []
        self.nodes = []
        self.funcs = []
        self.targeted = set()
        self.virtual = 0
        self.phase = 0
        self.sleeps = 0
        self.slots = list(TIMER_SLOTS)
        self.seq = 0

    # ---------------------------------------------------------------- helpers
    def say(self, *words):
        self.out.append(" ".join(str(w) for w in words))
        self.seq += 1

    def add(self, kind, parent, deadline=None):
        node = Node(f"c{len(self.nodes)}", kind, parent, deadline)
        self.nodes.append(node)
        return node

    def parent(self):
        # half the time one of the newest contexts, for deep trees
        if self.rng.random() < 0.5:
            return self.rng.choice(self.nodes[-4:])
        return self.rng.choice(self.nodes)

    def named_cause(self):
        return f"E{self.rng.randint(1, self.o.causes)}"

    def cause_for_constructor(self):
        x = self.rng.random()
        if x < 0.10:
            return "nil"
        if x < 0.15:
            return self.rng.choice(("canceled", "deadline_exceeded"))
        return self.named_cause()

    def cause_for_cancel(self):
        """A cause for `cancel ID CAUSE`, or None for the one-argument form."""
        x = self.rng.random()
        for limit, tok in ((0.15, None), (0.25, "nil"), (0.30, "canceled"),
                           (0.35, "deadline_exceeded")):
            if x < limit:
                return tok
        return self.named_cause()

    def offset(self, relative):
        """An offset for with_timeout (relative) or with_deadline, and its model."""
        sorts = ["expired", "far"] + (["firing"] if self.slots and not self.o.no_firing else [])
        sort = self.rng.choices(sorts, weights=(3, 4, 4)[:len(sorts)])[0]
        if sort == "expired":
            if relative:
                off = self.rng.choice(EXPIRED_RELATIVE)
            else:
                L = self.virtual
                off = self.rng.choice(sorted({L, L - 1, L - 50, L - 100, 0, -1, -5, -1000,
                                              -3_600_000}))
        elif sort == "far":
            off = self.rng.choice(FAR_RELATIVE if relative else FAR_ABSOLUTE)
        else:
            slot = self.rng.choice(self.slots)
            off = slot if relative else self.virtual + slot
        nominal = self.virtual + off if relative else off
        return off, sort, Deadline(nominal, not relative, self.phase, self.seq)

    # ---------------------------------------------------------------- statements
    def new_context(self):
        kinds = (("with_cancel", 14), ("with_cancel_cause", 14), ("with_deadline", 8),
                 ("with_deadline_cause", 7), ("with_timeout", 7), ("with_timeout_cause", 7),
                 ("with_value", 12), ("with_value_nil", 0 if self.o.no_nil_values else 2),
                 ("without_cancel", 5), ("background", 1), ("todo", 1))
        kind = self.rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        if kind in ROOTS:
            node = self.add(kind, None)
            self.say(kind, node.name)
            return
        p = self.parent()
        if kind.startswith(("with_deadline", "with_timeout")):
            self.deadline_context(kind, p)
            return
        inherited = None if kind == "without_cancel" else p.deadline
        node = self.add(kind, p, inherited)
        if kind == "with_value":
            self.say(kind, node.name, p.name, self.key(), self.rng.choice(VALUES))
        elif kind == "with_value_nil":
            self.say(kind, node.name, p.name, self.key())
        else:
            self.say(kind, node.name, p.name)

    def key(self):
        return f"k{self.rng.randint(1, self.o.keys)}"

    def deadline_context(self, kind, p):
        relative = kind.startswith("with_timeout")
        for _ in range(20):
            off, sort, mine = self.offset(relative)
            if p.deadline is None:
                effective = mine
                break
            first = p.deadline.before(mine)
            if first is not None:
                effective = p.deadline if first else mine
                break
        else:   # no robust offset for this parent: make a plain child instead
            node = self.add("with_cancel", p, p.deadline)
            self.say("with_cancel", node.name, p.name)
            return
        if sort == "firing" and effective is mine:  # a timer of its own: the slot is taken
            self.slots.remove(off if relative else off - self.virtual)
        node = self.add(kind, p, effective)
        if kind.endswith("_cause"):
            self.say(kind, node.name, p.name, off, self.cause_for_constructor())
        else:
            self.say(kind, node.name, p.name, off)

    def cancel(self):
        choices = [n for n in self.nodes if n.kind in CANCELLABLE]
        if not choices:
            return False
        n = self.rng.choice(choices)
        cause = self.cause_for_cancel() if n.kind == "with_cancel_cause" else None
        self.say("cancel", n.name, *([] if cause is None else [cause]))
        return True

    def after_func(self):
        on = self.parent()
        name = f"a{len(self.funcs)}"
        action = []
        if not self.o.no_actions and self.rng.random() < 0.4:
            free = [n for n in self.nodes
                    if n.kind in ("with_cancel", "with_cancel_cause")
                    and not n.cancellable_above() and n.name not in self.targeted]
            if free:
                t = self.rng.choice(free)
                self.targeted.add(t.name)
                verb = ("cancel_cause" if t.kind == "with_cancel_cause" and self.rng.random() < 0.6
                        else "cancel")
                action = [verb, t.name]
        self.funcs.append(name)
        self.say("after_func", name, on.name, *action)

    def stop(self):
        if not self.funcs:
            return False
        self.say("stop", self.rng.choice(self.funcs))
        return True

    def check(self):
        if self.rng.random() < 0.2:
            pool = [f"k{i}" for i in range(1, self.o.keys + 2)]   # one key never bound
            self.say("check", *sorted(self.rng.sample(pool, self.rng.randint(1, 2))))
        else:
            self.say("check")

    def sleep(self, forced=False):
        if not forced and (self.o.no_sleep or self.sleeps >= self.o.max_sleeps):
            return False
        ms = self.rng.choice(SLEEPS)
        self.say("sleep", ms)
        self.virtual += ms
        self.phase += 1
        self.sleeps += 1
        self.slots = list(TIMER_SLOTS)
        if not forced and self.rng.random() < 0.7:
            self.check()
        return True

    def errtext(self):
        self.say("errtext", self.rng.choice(self.nodes).name)

    # ---------------------------------------------------------------- script
    def script(self):
        root = self.add("background", None)
        self.say("background", root.name)
        mix = [(self.new_context, 45), (self.cancel, 14),
               (self.after_func, 0 if self.o.no_after_func else 10),
               (self.stop, 0 if self.o.no_after_func else 5),
               (self.check, 7), (self.sleep, 4), (self.errtext, 3)]
        fns, weights = [f for f, _ in mix], [w for _, w in mix]
        while len(self.out) < self.o.ops:
            if self.rng.choices(fns, weights=weights)[0]() is False:
                self.new_context()
        # let this phase's timers fire, and observe them
        if not self.o.no_sleep and (len(self.slots) < len(TIMER_SLOTS) or self.sleeps == 0):
            self.sleep(forced=True)
        if self.out[-1] != "check":
            self.say("check")
        return self.out


FLAGS = ("no_sleep", "no_firing", "no_after_func", "no_actions", "no_nil_values")


def render(opts):
    g = Generator(opts)
    body = g.script()
    cmd = (f"--seed {opts.seed} --ops {opts.ops} --keys {opts.keys} --causes {opts.causes}"
           f" --max-sleeps {opts.max_sleeps}"
           + "".join(f" --{f.replace('_', '-')}" for f in FLAGS if getattr(opts, f)))
    head = [f"# reference/gen.py {cmd}", f"# virtual time {g.virtual} ms"]
    return "\n".join(head + body) + "\n"


def options(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ops", type=int, default=40, help="statements, roughly (default 40)")
    p.add_argument("--keys", type=int, default=3, help="value keys k1..kN (default 3)")
    p.add_argument("--causes", type=int, default=3, help="named causes E1..EN (default 3)")
    p.add_argument("--max-sleeps", type=int, default=3, help="sleeps at most, before the last")
    p.add_argument("--no-sleep", action="store_true", help="no sleep: no timer fires")
    p.add_argument("--no-firing", action="store_true", help="no deadline that fires during the run")
    p.add_argument("--no-after-func", action="store_true", help="no after_func and no stop")
    p.add_argument("--no-actions", action="store_true", help="after_funcs only count their runs")
    p.add_argument("--no-nil-values", action="store_true", help="no with_value_nil")
    p.add_argument("--count", type=int, default=1, help="scripts for seeds seed..seed+count-1")
    p.add_argument("--outdir", help="write OUTDIR/SEED.script files instead of stdout")
    o = p.parse_args(argv)
    if min(o.ops, o.keys, o.causes, o.count) < 1 or o.max_sleeps < 0:
        p.error("--ops, --keys, --causes, --count must be >= 1, --max-sleeps >= 0")
    if o.count > 1 and not o.outdir:
        p.error("--count above 1 needs --outdir")
    return o


def main(argv=None):
    o = options(argv)
    first = o.seed
    for seed in range(first, first + o.count):
        o.seed = seed
        text = render(o)
        if o.outdir:
            os.makedirs(o.outdir, exist_ok=True)
            with open(os.path.join(o.outdir, f"{seed}.script"), "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)


if __name__ == "__main__":
    main()

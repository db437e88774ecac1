"""A persistent thread pool written in LLVM IR on libc (pthread_create, sched_yield, futex): no C, no OpenMP.

    tritc_pool_start(i32 n) -> i32            start n-1 workers (the caller is the n-th); idempotent
    tritc_parallel_for(ptr fn, ptr ctx, i64 n) run fn(ctx, task) for task in 0..n-1 and wait
    tritc_pool_size() -> i32, tritc_pool_stop()

A job is published as one 64-bit ticket, generation:32 | n_tasks:16 | next_task:16. Workers claim a
task with a compare-and-swap on the ticket, so a worker that read the job's fn/ctx can only run a
task if the ticket did not change in between (no torn jobs, no ABA within 2^32 jobs). Idle workers
spin, then sched_yield, then sleep on a futex. A caller that finds the pool busy (another thread
is inside a parallel region, or a task nests one) runs its tasks itself.
Kernel modules only declare tritc_parallel_for; `ensure_pool()` compiles this module once per
process and registers its symbols, so every kernel object loaded afterwards shares one pool.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable

import llvmlite.binding as llvm
import llvmlite.ir as ir

from ..builder import I32, I64, PTR, VOID, declare, for_range
from ..jit import LoadedObject, compile_and_load
from ..target import host_target

MAX_THREADS = 256
MAX_TASKS = 0xFFFF
SPIN_ITERS = 4000  # pause loops (~30-60 us) before yielding: a parallel_for right after another finds workers awake
YIELD_ITERS = 64  # then sched_yield; then futex sleep, so an idle pool costs nothing
SYS_FUTEX, FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 202, 128, 129
EXPORTS = ("tritc_pool_start", "tritc_parallel_for", "tritc_pool_size", "tritc_pool_stop")
TASK_FN = ir.FunctionType(VOID, [PTR, I64])


def declare_parallel_for(module: ir.Module) -> ir.Function:
    """`void tritc_parallel_for(ptr fn, ptr ctx, i64 n)`, for kernels that split work into tasks.

    Declared extern_weak: an object loaded where no pool was registered sees a null address
    instead of failing or jumping to 0, and `emit_parallel_call` then runs the tasks itself."""
    fn = declare(module, "tritc_parallel_for", VOID, [PTR, PTR, I64])
    if not fn.blocks:
        fn.linkage = "extern_weak"
    return fn


def emit_parallel_call(b: ir.IRBuilder, task: ir.Function, ctx: ir.Value, n_tasks: int | ir.Value) -> None:
    """tritc_parallel_for(task, ctx, n_tasks) if a pool is linked in, else the tasks in a loop here (n_tasks: a
    constant, or an i64 known at run time, at most MAX_TASKS)."""
    pfor = declare_parallel_for(b.module)
    linked = b.icmp_unsigned("!=", pfor, ir.Constant(PTR, None))
    with b.if_else(linked, likely=True) as (pool, alone):
        with pool:
            b.call(pfor, [task, ctx, n_tasks if isinstance(n_tasks, ir.Value) else ir.Constant(I64, n_tasks)])
        with alone:
            with for_range(b, n_tasks, name="task") as t:
                b.call(task, [ctx, t])


class _Pool:
    """The globals of one pool and small emitters for the atomics on them."""

    def __init__(self, module: ir.Module):
        self.m = module

        def glob(name: str, t: ir.Type, init: object = 0) -> ir.GlobalVariable:
            g = ir.GlobalVariable(module, t, f"tritc_pool.{name}")
            g.linkage = "internal"
            g.initializer = ir.Constant(t, init) if init is not None else ir.Constant(t, None)
            g.align = 64  # one cache line each: the ticket and the done counter are hammered by all threads
            return g

        self.ticket = glob("ticket", I64)
        self.fn = glob("fn", PTR, None)
        self.ctx = glob("ctx", PTR, None)
        self.done = glob("done", I64)
        self.busy = glob("busy", I32)
        self.futex = glob("futex", I32)
        self.sleepers = glob("sleepers", I32)
        self.nthreads = glob("nthreads", I32, 1)
        self.stop = glob("stop", I32)
        self.tids = glob("tids", ir.ArrayType(I64, MAX_THREADS), None)
        self.pthread_create = declare(module, "pthread_create", I32, [PTR, PTR, PTR, PTR])
        self.pthread_join = declare(module, "pthread_join", I32, [I64, PTR])
        self.sched_yield = declare(module, "sched_yield", I32, [])
        self.syscall = module.globals.get("syscall") or ir.Function(module, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
        self.x86 = module.triple.startswith("x86_64") or module.triple == "" or "x86" in module.triple

    @staticmethod
    def load(b: ir.IRBuilder, g: ir.GlobalVariable, order: str = "seq_cst") -> ir.Value:
        t = g.value_type
        return b.load_atomic(g, order, 8 if t in (I64, PTR) else 4, typ=t)

    @staticmethod
    def store(b: ir.IRBuilder, value: ir.Value, g: ir.GlobalVariable, order: str = "seq_cst") -> None:
        # IRBuilder.store_atomic checks a typed pointee, which opaque pointers do not have
        b._insert(ir.instructions.StoreAtomicInstr(b.block, value, g, order, 8 if value.type in (I64, PTR) else 4))

    def pause(self, b: ir.IRBuilder) -> None:
        if self.x86:
            b.call(declare(self.m, "llvm.x86.sse2.pause", VOID, []), [])

    def futex_call(self, b: ir.IRBuilder, op: int, val: ir.Value) -> None:
        b.call(self.syscall, [ir.Constant(I64, SYS_FUTEX), self.futex, ir.Constant(I32, op), val, ir.Constant(PTR, None)])

    @staticmethod
    def decode(b: ir.IRBuilder, t: ir.Value) -> tuple[ir.Value, ir.Value]:
        idx = b.and_(t, ir.Constant(I64, 0xFFFF))
        n = b.and_(b.lshr(t, ir.Constant(I64, 16)), ir.Constant(I64, 0xFFFF))
        return idx, n

    def try_run_one(self, b: ir.IRBuilder, t: ir.Value, idx: ir.Value, on_done: ir.Block, on_fail: ir.Block) -> None:
        """Claim task idx of ticket t with a CAS; run it and count it done, or go to on_fail."""
        fn = self.load(b, self.fn, "monotonic")
        ctx = self.load(b, self.ctx, "monotonic")
        pair = b.cmpxchg(self.ticket, t, b.add(t, ir.Constant(I64, 1)), "acq_rel", "monotonic")
        run = b.append_basic_block("run")
        b.cbranch(b.extract_value(pair, 1), run, on_fail)
        b.position_at_end(run)
        b.call(_callee(fn), [ctx, idx])
        b.atomic_rmw("add", self.done, ir.Constant(I64, 1), "release")
        b.branch(on_done)


class _callee:  # noqa: N801 - used like a function
    """A task-function pointer as a callee: with opaque pointers llvmlite needs the callee's type."""

    def __init__(self, ptr: ir.Value):
        self.ptr, self.type, self.function_type = ptr, PTR, TASK_FN

    def get_reference(self) -> str:
        return self.ptr.get_reference()


def _emit_worker(pool: _Pool) -> ir.Function:
    fn = ir.Function(pool.m, ir.FunctionType(PTR, [PTR]), "tritc_pool.worker")
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    spins = b.alloca(I32, name="spins")
    b.store(ir.Constant(I32, 0), spins)
    loop, work, idle, spin, yld, sleep, wait, leave = (fn.append_basic_block(n) for n in
                                                       ("loop", "work", "idle", "spin", "yield", "sleep", "wait", "leave"))
    ran = fn.append_basic_block("ran")
    b.branch(loop)

    b.position_at_end(loop)
    stop = b.icmp_unsigned("!=", pool.load(b, pool.stop, "acquire"), ir.Constant(I32, 0))
    check = fn.append_basic_block("check")
    b.cbranch(stop, leave, check)
    b.position_at_end(check)
    t = pool.load(b, pool.ticket, "acquire")
    idx, n = pool.decode(b, t)
    b.cbranch(b.icmp_unsigned("<", idx, n), work, idle)

    b.position_at_end(work)
    pool.try_run_one(b, t, idx, ran, loop)
    b.position_at_end(ran)
    b.store(ir.Constant(I32, 0), spins)
    b.branch(loop)

    b.position_at_end(idle)
    s = b.add(b.load(spins, typ=I32), ir.Constant(I32, 1))
    b.store(s, spins)
    b.cbranch(b.icmp_unsigned("<", s, ir.Constant(I32, SPIN_ITERS)), spin, yld)
    b.position_at_end(spin)
    pool.pause(b)
    b.branch(loop)
    b.position_at_end(yld)
    do_yield = fn.append_basic_block("do_yield")
    b.cbranch(b.icmp_unsigned("<", s, ir.Constant(I32, SPIN_ITERS + YIELD_ITERS)), do_yield, sleep)
    b.position_at_end(do_yield)
    b.call(pool.sched_yield, [])
    b.branch(loop)

    # Sleep: read the futex word, announce ourselves, re-check for work; the poster bumps the word
    # after publishing and wakes if it sees a sleeper, so no wake-up can be lost (all seq_cst).
    b.position_at_end(sleep)
    word = pool.load(b, pool.futex)
    b.atomic_rmw("add", pool.sleepers, ir.Constant(I32, 1), "seq_cst")
    t2 = pool.load(b, pool.ticket)
    idx2, n2 = pool.decode(b, t2)
    has_work = b.or_(b.icmp_unsigned("<", idx2, n2), b.icmp_unsigned("!=", pool.load(b, pool.stop), ir.Constant(I32, 0)))
    woke = fn.append_basic_block("woke")
    b.cbranch(has_work, woke, wait)
    b.position_at_end(wait)
    pool.futex_call(b, FUTEX_WAIT_PRIVATE, word)
    b.branch(woke)
    b.position_at_end(woke)
    b.atomic_rmw("sub", pool.sleepers, ir.Constant(I32, 1), "seq_cst")
    b.store(ir.Constant(I32, 0), spins)
    b.branch(loop)

    b.position_at_end(leave)
    b.ret(ir.Constant(PTR, None))
    return fn


def _emit_parallel_for(pool: _Pool) -> None:
    fn = declare(pool.m, "tritc_parallel_for", VOID, [PTR, PTR, I64])
    fn.linkage = ""  # a definition here, even if a kernel declared it extern_weak first
    task, ctx, n = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    serial, lock, post, work, claim, waitb, spin, finish, ret = (
        fn.append_basic_block(x) for x in ("serial", "lock", "post", "work", "claim", "wait", "spin", "finish", "ret"))
    callee = _callee(task)
    nthreads = pool.load(b, pool.nthreads, "monotonic")
    alone = b.or_(b.icmp_signed("<=", nthreads, ir.Constant(I32, 1)), b.icmp_signed("<=", n, ir.Constant(I64, 1)))
    alone = b.or_(alone, b.icmp_signed(">", n, ir.Constant(I64, MAX_TASKS)))
    b.cbranch(alone, serial, lock)

    b.position_at_end(serial)  # no pool, one task, or the pool is busy: run everything here
    with_loop(b, n, lambda i: b.call(callee, [ctx, i]))
    b.branch(ret)

    b.position_at_end(lock)
    got = b.extract_value(b.cmpxchg(pool.busy, ir.Constant(I32, 0), ir.Constant(I32, 1), "acquire", "monotonic"), 1)
    b.cbranch(got, post, serial)

    b.position_at_end(post)
    pool.store(b, task, pool.fn, "monotonic")
    pool.store(b, ctx, pool.ctx, "monotonic")
    pool.store(b, ir.Constant(I64, 0), pool.done, "monotonic")
    gen = b.add(b.lshr(pool.load(b, pool.ticket, "monotonic"), ir.Constant(I64, 32)), ir.Constant(I64, 1))
    pool.store(b, b.or_(b.shl(gen, ir.Constant(I64, 32)), b.shl(n, ir.Constant(I64, 16))), pool.ticket)
    b.atomic_rmw("add", pool.futex, ir.Constant(I32, 1), "seq_cst")
    with b.if_then(b.icmp_signed(">", pool.load(b, pool.sleepers), ir.Constant(I32, 0))):
        pool.futex_call(b, FUTEX_WAKE_PRIVATE, ir.Constant(I32, 0x7FFFFFFF))
    b.branch(work)

    b.position_at_end(work)  # the caller works too, then waits for the workers' last tasks
    t = pool.load(b, pool.ticket, "acquire")
    idx, _ = pool.decode(b, t)
    work_exit = b.block
    b.cbranch(b.icmp_unsigned("<", idx, n), claim, waitb)
    b.position_at_end(claim)
    pool.try_run_one(b, t, idx, work, work)

    # Wait for the workers' last tasks: spin, then yield, so that on an oversubscribed machine the
    # caller hands its core to the descheduled worker it waits for.
    b.position_at_end(waitb)
    waited = b.phi(I32, name="waited")
    waited.add_incoming(ir.Constant(I32, 0), work_exit)
    done = pool.load(b, pool.done, "acquire")
    b.cbranch(b.icmp_signed("<", done, n), spin, finish)
    b.position_at_end(spin)
    with b.if_else(b.icmp_unsigned("<", waited, ir.Constant(I32, SPIN_ITERS))) as (short, long):
        with short:
            pool.pause(b)
        with long:
            b.call(pool.sched_yield, [])
    waited.add_incoming(b.add(waited, ir.Constant(I32, 1)), b.block)
    b.branch(waitb)

    b.position_at_end(finish)
    pool.store(b, ir.Constant(I32, 0), pool.busy, "release")
    b.branch(ret)
    b.position_at_end(ret)
    b.ret_void()


def with_loop(b: ir.IRBuilder, n: ir.Value, body: Callable[[ir.Value], object]) -> None:
    """for i in range(n): body(i), with n an i64 value."""
    with for_range(b, n, name="t") as i:
        body(i)


def _emit_start_stop(pool: _Pool, worker: ir.Function) -> None:
    m = pool.m
    start = declare(m, "tritc_pool_start", I32, [I32])
    b = ir.IRBuilder(start.append_basic_block("entry"))
    have = pool.load(b, pool.nthreads)
    fresh = b.icmp_signed("<=", have, ir.Constant(I32, 1))
    with b.if_then(b.not_(fresh)):
        b.ret(have)
    want = start.args[0]
    want = b.select(b.icmp_signed("<", want, ir.Constant(I32, 1)), ir.Constant(I32, 1), want)
    want = b.select(b.icmp_signed(">", want, ir.Constant(I32, MAX_THREADS)), ir.Constant(I32, MAX_THREADS), want)
    pool.store(b, ir.Constant(I32, 0), pool.stop)
    count = b.alloca(I32, name="count")
    b.store(ir.Constant(I32, 1), count)
    with for_range(b, b.zext(want, I64), start=1, name="w") as i:
        slot = b.gep(pool.tids, [ir.Constant(I64, 0), i], inbounds=True, source_etype=pool.tids.value_type)
        rc = b.call(pool.pthread_create, [slot, ir.Constant(PTR, None), worker, ir.Constant(PTR, None)])
        with b.if_then(b.icmp_signed("==", rc, ir.Constant(I32, 0))):
            # workers are created in order; a failure leaves the count at the threads that exist
            b.store(b.add(b.load(count, typ=I32), ir.Constant(I32, 1)), count)
    got = b.load(count, typ=I32)
    pool.store(b, got, pool.nthreads)
    b.ret(got)

    size = declare(m, "tritc_pool_size", I32, [])
    b = ir.IRBuilder(size.append_basic_block("entry"))
    b.ret(pool.load(b, pool.nthreads))

    stop = declare(m, "tritc_pool_stop", VOID, [])
    b = ir.IRBuilder(stop.append_basic_block("entry"))
    have = pool.load(b, pool.nthreads)
    pool.store(b, ir.Constant(I32, 1), pool.stop)
    b.atomic_rmw("add", pool.futex, ir.Constant(I32, 1), "seq_cst")
    pool.futex_call(b, FUTEX_WAKE_PRIVATE, ir.Constant(I32, 0x7FFFFFFF))
    with for_range(b, b.zext(have, I64), start=1, name="w") as i:
        slot = b.gep(pool.tids, [ir.Constant(I64, 0), i], inbounds=True, source_etype=pool.tids.value_type)
        b.call(pool.pthread_join, [b.load(slot, typ=I64), ir.Constant(PTR, None)])
    pool.store(b, ir.Constant(I32, 1), pool.nthreads)
    pool.store(b, ir.Constant(I32, 0), pool.stop)
    b.ret_void()


def emit_thread_pool(module: ir.Module) -> None:
    """Define the pool's functions and state in `module` (a kernel module may include it directly)."""
    pool = _Pool(module)
    worker = _emit_worker(pool)
    _emit_parallel_for(pool)
    _emit_start_stop(pool, worker)


def default_threads() -> int:
    """$TRITC_NUM_THREADS, else every core this process may run on."""
    env = os.environ.get("TRITC_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_lock = threading.Lock()
_pool: LoadedObject | None = None  # kept for the life of the process: workers run its code


def register_pool() -> LoadedObject:
    """Compile the process-wide pool (once) and make its symbols visible to kernel objects loaded afterwards,
    without starting workers: until ensure_pool() starts them, tritc_parallel_for runs the tasks in the caller."""
    global _pool
    with _lock:
        if _pool is None:
            module = ir.Module(name="tritc_pool")
            target = host_target("generic")
            module.triple = target.triple
            emit_thread_pool(module)
            lib, _ = compile_and_load(module, target, link_pool=False)
            for name in EXPORTS:
                llvm.add_symbol(name, lib.address(name))
            _pool = lib
        return _pool


def ensure_pool(threads: int | None = None) -> int:
    """Register the pool (register_pool) and start it with `threads` threads (default: default_threads()).
    Returns its size. A pool that is already running keeps its size; call stop_pool() first to resize it."""
    pool = register_pool()
    with _lock:
        start = pool.function("tritc_pool_start", ctypes.c_int32, [ctypes.c_int32])
        return int(start(threads or default_threads()))


def stop_pool() -> None:
    """Join the workers (the pool can be started again with another size)."""
    with _lock:
        if _pool is not None:
            _pool.function("tritc_pool_stop", None, [])()


def pool_size() -> int:
    with _lock:
        return 1 if _pool is None else int(_pool.function("tritc_pool_size", ctypes.c_int32, [])())


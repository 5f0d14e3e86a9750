"""Run a study's independent units at once, as Ray tasks, on this machine or on a Ray cluster.

The serial runner stays the one definition of a study. The driver plans the units the serial run
would run (``plan_tasks``), leaves out those already on disk, and hands the rest to Ray as tasks
that wait for the tasks they need:

- one task per fold, generator and generator seed (``generator_seeds``): training, samples (refiner
  training, refined set), FID, audit, in the YAML's order; entries that share one trained generator
  (pggan and pggan+unit) are one task;
- one task per classic-copies sweep unit (classifier, seed, fold, copies);
- one task per classifier unit (classifier, seed, fold, arm), after its fold's generator tasks and
  its sweep units.

Each task builds its own ``StudyRunner`` in the worker from the same config, folder and --quick, and
runs that unit alone through the runner's own methods, so it writes exactly the files the serial run
writes (atomically: a task killed outright leaves the unit absent, never half-written). Every unit
seeds itself (network initialisation, batches, augmentation, sampling) and depends on nothing that
ran before it in the same process. The caller then runs the ordinary serial ``run()``, which finds
every unit on disk and assembles results.json from them, as it does after a resumed serial run.

Threads: each task asks Ray for ``max(1, CPUs // jobs)`` CPUs and runs torch, OpenMP and BLAS with
that many threads, so jobs never oversubscribe the cores (two 2-thread jobs on 2 cores were 25x
slower than one). Torch's float32 kernels round differently with a different number of threads, so
numbers computed from features (FID, KID, the audit's, the domain Frechet distance) may differ from
a serial run with another thread count in their last digits; with the same threads they are equal.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medsyn.errors import ConfigError, MedsynError, RunError

RAY_MISSING = "parallel studies (--jobs, --address) need Ray: pip install 'medsyn[parallel]'"
MAX_RETRIES = 3  # a task whose worker dies (kill -9, out of memory, a lost machine) runs again, resuming
STOP_GRACE_SECONDS = 30.0  # after Ctrl-C, running units get this long to stop cleanly (a GAN saves its checkpoint)
OBJECT_STORE_BYTES = 256 * 2**20  # tasks pass a config and return a few lines: Ray's default 30% of RAM is waste


@dataclass(frozen=True)
class Task:
    """Units the serial run would run in this order, run as one Ray task."""
    kind: str  # "generators", "sweep" or "classifier"
    fold: int
    args: tuple
    label: str
    units: int  # how many of ``StudyRunner.units_total()`` it finishes
    needs: tuple[int, ...] = ()  # positions of the tasks it waits for, in ``plan_tasks``'s list


def cpu_count() -> int:
    """The cores this process may use (a CPU set or container limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def check_jobs(jobs: int | None) -> None:
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs takes a whole number of 1 or more, got {jobs}")


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def plan_tasks(runner) -> list[Task]:
    """Every unit of a prepared runner's study as tasks, each listed after the tasks it needs."""
    from medsyn.evaluate.arms import Arm
    from medsyn.study.plan import answer_order

    cfg, tasks = runner.cfg, []
    per_entry = {g.name: 2 + 2 * bool(g.refiner) + int(cfg.fid.enabled) + int(cfg.audit.enabled)
                 for g in cfg.generators}
    for fold in runner.folds:
        k, chain = fold.index, {}
        groups: dict[str, list[str]] = {}
        for gen in cfg.generators:
            groups.setdefault(runner._trained_by(gen), []).append(gen.name)
        for gseed in runner.generator_seeds():
            for names in groups.values():
                chain.update({(name, gseed): len(tasks) for name in names})
                tasks.append(Task("generators", k, (tuple(names), gseed),
                                  f"generators {', '.join(names)} {runner.slot_label(k, gseed)}",
                                  sum(per_entry[n] for n in names)))
        for clf in cfg.classifiers:
            sweeps = []
            if cfg.classic.sweep:
                for seed in cfg.seeds:
                    for copies in cfg.classic.copies:
                        sweeps.append(len(tasks))
                        noun = "copy" if copies == 1 else "copies"
                        label = f"{clf.name} seed {seed} fold {k}: classic, {copies} {noun} (sweep)"
                        tasks.append(Task("sweep", k, (clf.name, seed, copies), label, 1))
            for seed, spec in answer_order(cfg):
                if cfg.classic.sweep and spec.arm is Arm.CLASSIC:  # the sweep's chosen unit is this arm's
                    continue
                gens = cfg.generators if spec.arm is Arm.REAL else [g for g in cfg.generators
                                                                    if g.name == spec.generator]
                gseed = runner.generator_seed_for(seed)
                needs = tuple(sorted({chain[(g.name, gseed)] for g in gens})) + tuple(sweeps)
                tasks.append(Task("classifier", k, (clf.name, seed, spec),
                                  f"{clf.name} seed {seed} fold {k}: {spec.label}", 1, needs))
    return tasks


def task_done(runner, task: Task) -> bool:
    """Whether every unit of ``task`` is on disk (then it is not sent to a worker)."""
    from medsyn.study.plan import classifier_unit_key
    from medsyn.study.sweep import choice_on_disk, sweep_key

    cfg, store, k = runner.cfg, runner.store, task.fold
    if task.kind == "generators":
        names, gseed = task.args
        return all(runner.generator_done(g, k, gseed) for g in cfg.generators if g.name in names)
    if task.kind == "sweep":
        return store.has(sweep_key(task.args[0], task.args[1], k, task.args[2]))
    clf, seed, spec = task.args
    copies = cfg.classic.copies
    if cfg.classic.sweep:
        chosen = choice_on_disk(store, clf, cfg.seeds, k, cfg.classic.copies)
        if chosen is None:
            return False
        copies = chosen[1]
    return runner.classifier_unit_done(classifier_unit_key(cfg, clf, seed, k, spec, copies), spec)


def limit_threads(threads: int) -> None:
    """torch, OpenMP and BLAS in this process use ``threads`` threads."""
    import torch
    from threadpoolctl import threadpool_limits

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


def run_task(cfg, out: str, quick: bool, threads: int, task: Task, *needed: Any) -> dict:
    """In a worker: run ``task``'s units as the serial run would; ``needed`` are the results of the
    tasks it waited for (Ray passes them once they are done). Returns what it ran, as the serial
    run's unit lines."""
    from medsyn.study.runner import StudyRunner

    limit_threads(threads)
    started = time.perf_counter()
    ran: list[str] = []
    try:
        runner = StudyRunner(cfg, Path(out), quick=quick, on_unit=ran.append)
        runner.prepare()
        fold = next(f for f in runner.folds if f.index == task.fold)
        if task.kind == "generators":
            runner.run_generators(fold, task.args[0], gseeds=(task.args[1],))
        elif task.kind == "sweep":
            clf_name, seed, copies = task.args
            runner._sweep_unit(next(c for c in runner.cfg.classifiers if c.name == clf_name), seed, fold, copies)
        else:
            runner.run_classifier(*task.args[:2], fold, task.args[2])
    except MedsynError as err:  # one line, as the serial run's; some error classes do not survive pickling
        raise RunError(f"{task.label}: {err}") from None
    return {"ran": ran, "seconds": time.perf_counter() - started, "pid": os.getpid()}


Done = Callable[[Task, dict, int], None]


def run_parallel(runner, jobs: int | None = None, address: str | None = None, on_done: Done | None = None,
                 on_start: Callable[[str], None] | None = None) -> list[str]:
    """Run every unit of the prepared ``runner``'s study not on disk yet as Ray tasks, ``jobs`` at a time.

    Args:
        runner: a prepared ``StudyRunner`` whose folder path every worker can reach (absolute).
        jobs: tasks at once (default: 1 without ``address``, one per machine of the cluster with it).
        address: HOST:PORT (or "auto") of a running Ray cluster; None starts Ray on this machine with
            its cores, unless this process is already connected to a cluster (then that one is used).
        on_done: told each finished task, its result and the number of the study's units now done.
        on_start: told, in words, how many tasks run where, with how many threads each.

    Returns:
        The unit lines the workers ran (the serial run's ``on_unit`` texts), in the order tasks ended.

    Raises:
        StudyInterrupted: Ctrl-C; running units were asked to stop (a GAN saves its checkpoint), and
            every unit finished is on disk.
        RunError: a unit failed (named), a worker died MAX_RETRIES + 1 times, or no cluster at ``address``.
    """
    from medsyn.study.runner import StudyInterrupted
    from medsyn.study.store import write_study_marker

    check_jobs(jobs)
    ray = import_ray()
    plan = plan_tasks(runner)
    todo = [i for i, task in enumerate(plan) if not task_done(runner, task)]
    if not todo:
        return []
    own = _connect(ray, address)
    try:
        write_study_marker(runner.out, runner._resolved)  # workers' prepare() checks it is the same study
        resources, nodes = ray.cluster_resources(), [n for n in ray.nodes() if n.get("Alive")]
        cpus = int(resources.get("CPU", 1))
        if jobs is None:
            jobs = max(1, len(nodes)) if address else 1
        largest = max([int(n.get("Resources", {}).get("CPU", 0)) for n in nodes] or [1])
        threads = max(1, min(cpus // jobs, largest))  # a task runs on one machine
        gpus = _gpus_per_task(runner.cfg.device, float(resources.get("GPU", 0)), jobs)
        if on_start:
            on_start(f"{len(todo)} tasks on Ray ({cpus} CPUs, {len(nodes)} machine{'s' * (len(nodes) != 1)}): "
                     f"{min(jobs, cpus // threads)} at once, {threads} thread{'s' * (threads != 1)}"
                     + (f" and {gpus:g} GPU" if gpus else "") + " each")
        # max_calls=1: a fresh worker process per task. A cancelled task (Ctrl-C) is interrupted wherever
        # it is, even halfway through importing a module, and a reused worker would keep that broken
        # module for its next task; a unit is minutes long, a process start a few seconds.
        remote, resources_per_task = ray.remote(max_calls=1)(run_task), {
            "num_cpus": threads, "num_gpus": gpus, "max_retries": MAX_RETRIES, "retry_exceptions": False}
        # the runner's own config, not the --quick one: each worker applies --quick itself, as here
        args = (runner.given_cfg, str(Path(runner.out).resolve()), runner.quick, threads)
        refs: dict[int, Any] = {}
        try:
            for i in todo:  # plan order: a task's needs are submitted before it
                task = plan[i]
                refs[i] = remote.options(name=f"medsyn {task.label}", **resources_per_task).remote(
                    *args, task, *[refs[j] for j in task.needs if j in refs])
        except BaseException:
            _stop(ray, list(refs.values()))
            raise
        done = sum(task.units for i, task in enumerate(plan) if i not in refs)
        return _gather(ray, {ref: plan[i] for i, ref in refs.items()}, done, on_done)
    except KeyboardInterrupt:
        raise StudyInterrupted() from None
    finally:
        if own:
            ray.shutdown()


def _gather(ray, pending: dict, done: int, on_done: Done | None) -> list[str]:
    ran: list[str] = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # a timeout lets Ctrl-C in
            for ref in ready:
                task = pending.pop(ref)
                result = _result(ray, ref, task)
                ran += result["ran"]
                done += task.units
                if on_done:
                    on_done(task, result, done)
    except BaseException:
        _stop(ray, list(pending))
        raise
    return ran


def _result(ray, ref, task: Task) -> dict:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, MedsynError):
            raise err.cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as err:
        raise RunError(f"{task.label}: its worker died {MAX_RETRIES + 1} times ({type(err).__name__}); finished "
                       "units are kept, rerun the command to continue") from None


def _stop(ray, refs: list) -> None:
    """Ask every unfinished task to stop as Ctrl-C would; kill those still running after the grace time."""
    if not refs:
        return
    try:
        for ref in refs:
            ray.cancel(ref)
        _, running = ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_SECONDS)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        running = refs
    for ref in running:
        ray.cancel(ref, force=True)


def _gpus_per_task(device: str, gpus: float, jobs: int) -> float:
    if device == "cpu" or (device == "auto" and not gpus):
        return 0
    if not gpus:
        raise RunError(f"the study's device is {device}, but the Ray cluster has no GPU")
    return min(1.0, gpus / jobs)  # several jobs share a GPU in equal fractions


def _connect(ray, address: str | None) -> bool:
    """Connect to the cluster at ``address``, or start Ray here; True when this call started it."""
    import logging

    if ray.is_initialized():
        return False
    if address:
        check_address(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise RunError(f"--address {address}: cannot connect to a Ray cluster ({err})") from None
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: Ray must not report usage anywhere
    ray.init(num_cpus=cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=OBJECT_STORE_BYTES)
    return True


def check_address(address: str | None) -> None:
    """Fail in seconds, in one line, where Ray would retry for a minute: nothing listens at HOST:PORT."""
    if address is None or address == "auto":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address takes HOST:PORT (the head's `ray start --head` port, 6379 by default), "
                          f"got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise RunError(f"--address {address}: no Ray cluster reachable there ({err.strerror or err}); start one "
                       "with `ray start --head`") from None

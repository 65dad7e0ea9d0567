"""Where each running trial trains: a pool of devices, each taking up to K trials at once.

A device is a GPU index (``"0"``) or ``None`` (the trainer's own choice: the only GPU, or the CPU).
A trial normally goes to the device with the most free places, so trials spread over the GPUs
before they share one. A trial that ran out of memory while sharing its device asks for an
*exclusive* lease: the pool stops placing new trials on the least busy device, waits until the
trials there have finished, and gives the whole device to that trial, so it is placed again with
more room instead of being lost.

Example::

    pool = SlotPool({"0": 2, "1": 2}, stopping=threading.Event())
    lease = pool.acquire()            # Lease(device="0", trials_on_device=1, ...)
    ...                               # run the trial with lease.env()
    pool.release(lease)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from trainer.env_contract import DEVICE_ENV, TRIALS_ON_DEVICE_ENV

WAKE_SECONDS = 0.5


class PoolStopped(Exception):
    """The run is stopping: no more placements."""


@dataclass(eq=False)
class Lease:
    """A running trial's place on a device."""

    device: str | None
    exclusive: bool = False
    trials_on_device: int = 1
    """Trials on the device when this one was placed, itself included (passed to the trainer)."""
    shared: bool = False
    """Whether another trial ran on the device at any time during this lease."""

    def env(self) -> dict[str, str]:
        """Environment of a trainer run under this lease."""
        env = {TRIALS_ON_DEVICE_ENV: str(self.trials_on_device)}
        if self.device is not None:
            env[DEVICE_ENV] = self.device
        return env

    def describe(self) -> dict:
        return {"device": self.device, "trials_on_device": self.trials_on_device, "exclusive": self.exclusive}


@dataclass
class _Device:
    name: str | None
    capacity: int
    leases: list[Lease] = field(default_factory=list)
    reserved: bool = False  # an exclusive request waits for this device to empty

    def free(self) -> int:
        if any(lease.exclusive for lease in self.leases):
            return 0
        return self.capacity - len(self.leases)


class SlotPool:
    """Thread-safe placement of trials on devices; ``capacity`` maps each device to its K."""

    def __init__(self, capacity: dict[str | None, int], stopping: threading.Event) -> None:
        if not capacity or min(capacity.values()) < 1:
            raise ValueError(f"every device needs room for at least one trial, but got {capacity=}")
        self._devices = {device: _Device(device, k) for device, k in capacity.items()}
        self._stopping = stopping
        self._changed = threading.Condition()

    @property
    def size(self) -> int:
        """How many trials may run at once."""
        return sum(d.capacity for d in self._devices.values())

    def acquire(self, exclusive: bool = False) -> Lease:
        """A lease on a device (blocking until one is free); raises PoolStopped once the run stops."""
        with self._changed:
            reserved: _Device | None = None
            while True:
                if self._stopping.is_set():
                    if reserved is not None:
                        reserved.reserved = False
                    raise PoolStopped()
                if exclusive:
                    if reserved is None:
                        reserved = self._least_busy_unreserved()
                        if reserved is not None:
                            reserved.reserved = True
                    if reserved is not None and not reserved.leases:
                        reserved.reserved = False
                        return self._place(reserved, exclusive=True)
                else:
                    open_devices = [d for d in self._devices.values() if not d.reserved and d.free() > 0]
                    if open_devices:
                        return self._place(max(open_devices, key=_Device.free), exclusive=False)
                self._changed.wait(WAKE_SECONDS)

    def release(self, lease: Lease) -> None:
        with self._changed:
            self._devices[lease.device].leases.remove(lease)
            self._changed.notify_all()

    def wake(self) -> None:
        """Let waiting acquirers see that the run stops."""
        with self._changed:
            self._changed.notify_all()

    def _least_busy_unreserved(self) -> _Device | None:
        candidates = [d for d in self._devices.values() if not d.reserved]
        return min(candidates, key=lambda d: len(d.leases)) if candidates else None

    def _place(self, device: _Device, exclusive: bool) -> Lease:
        lease = Lease(device.name, exclusive=exclusive, trials_on_device=len(device.leases) + 1)
        device.leases.append(lease)
        if len(device.leases) > 1:
            for other in device.leases:
                other.shared = True
        return lease

"""What travels between the ranks, as flat NumPy buffers.

A message is a header (:class:`Header`, int64) plus arrays.  For a model
with layers 0..L-1 the arrays are, in this order (each only when the
header's flags say so):

    indptr   int64    every layer's indptr, concatenated (sum of n_out + 1)
    indices  int32    every layer's indices, concatenated (sum of nnz)
    values   float32  every layer's weights, then every layer's biases, then
                      the SReLU parameters (4 per neuron) of each SReLU layer
    velocity float32  the momenta of the same, in the same layout

A gradient uses the ``values`` layout on the topology the worker computed
it on.  The per-layer nnz are in the header, so the receiver can size
everything before the arrays arrive; the layer shapes never change and
both sides know them.

Random streams travel as their PCG64 state in six uint64 (:func:`pack_pcg64`).
"""

from __future__ import annotations

import numpy as np

from ..layers import SparseLayer
from ..model import SparseMLP

# message kinds
GRAD = 1        # worker -> PS, phase 1: a gradient and the step it was computed at
MODEL = 2       # PS -> worker, phase 1: the current model (values; topology if changed)
PHASE2 = 3      # PS -> worker: go to phase 2 with this model (+ momentum, + evolution stream)
STOP = 4        # PS -> worker: stop now (done, preempted, failed elsewhere); exit code in EPOCH
REPORT = 5      # worker -> PS, phase 2: end of a local epoch (loss, accuracy, nnz)
CONTROL = 6     # PS -> worker, phase 2: what to send, whether to stop
WEIGHTS = 7     # worker -> PS, phase 2: its model (for the average / a checkpoint)
START = 8       # PS -> worker: the model and the worker's state to start (or resume) from
DATA = 9        # PS -> worker: its partition of the training data
EVOLVED = 10    # worker -> PS, phase 2: nnz after its evolution step (LOSS: its seconds)

KIND_NAMES = {GRAD: "GRAD", MODEL: "MODEL", PHASE2: "PHASE2", STOP: "STOP", REPORT: "REPORT",
              CONTROL: "CONTROL", WEIGHTS: "WEIGHTS", START: "START", DATA: "DATA",
              EVOLVED: "EVOLVED"}

# header flags
F_TOPOLOGY = 1      # indptr + indices follow
F_VALUES = 2        # values follow
F_VELOCITY = 4      # velocity follows
F_STOP_REQUEST = 8  # worker -> PS: this rank received SIGTERM / SIGUSR1
F_WANT_WEIGHTS = 16  # CONTROL: send your weights now (before evolution), for the average
F_WANT_STATE = 32   # CONTROL: send your full state after evolution, for a checkpoint
F_LAST = 64         # CONTROL: stop after this epoch's exchanges
F_PS_MODEL = 128    # START (phase 2, resumed): a MODEL message with the PS's model follows,
#                     the one a worker syncs with (--phase2-sync-every)


class Header:
    """Named fields of the int64 header of every message.

    ``Header(n_layers)`` allocates a zeroed one; ``h.arr`` is the buffer
    that is sent or received.  Fields 0-9 are integers, 10-21 two PCG64
    states (shuffle and evolution streams), 22 a float64 (a loss), then
    one nnz per layer.
    """

    KIND, STEP, VERSION, EPOCH, FLAGS, LOCAL_EPOCH, BATCH, LOCAL_STEP, COUNT, PHASE = range(10)
    RNG_SHUFFLE = slice(10, 16)
    RNG_EVOLUTION = slice(16, 22)
    LOSS = 22
    N_FIXED = 24

    def __init__(self, n_layers: int) -> None:
        self.n_layers = int(n_layers)
        self.arr = np.zeros(self.N_FIXED + self.n_layers, dtype=np.int64)

    def clear(self) -> Header:
        self.arr[:] = 0
        return self

    def __getitem__(self, field: int) -> int:
        return int(self.arr[field])

    def __setitem__(self, field: int, value: int) -> None:
        self.arr[field] = int(value)

    @property
    def kind(self) -> int:
        return int(self.arr[self.KIND])

    @property
    def flags(self) -> int:
        return int(self.arr[self.FLAGS])

    @property
    def loss(self) -> float:
        return float(self.arr[self.LOSS:self.LOSS + 1].view(np.float64)[0])

    @loss.setter
    def loss(self, value: float) -> None:
        self.arr[self.LOSS:self.LOSS + 1].view(np.float64)[0] = value

    @property
    def nnz(self) -> list[int]:
        return [int(v) for v in self.arr[self.N_FIXED:]]

    @nnz.setter
    def nnz(self, values) -> None:
        self.arr[self.N_FIXED:] = np.asarray(values, dtype=np.int64)

    def rng(self, which: slice) -> np.ndarray:
        return self.arr[which].view(np.uint64)

    def set_rng(self, which: slice, state: np.ndarray) -> None:
        self.arr[which] = np.asarray(state, dtype=np.uint64).view(np.int64)


# ---------------------------------------------------------------------- random streams
def pack_pcg64(gen: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's state as six uint64."""
    st = gen.bit_generator.state
    if st["bit_generator"] != "PCG64":
        raise ValueError(f"only PCG64 streams travel, got {st['bit_generator']}")
    s, inc = int(st["state"]["state"]), int(st["state"]["inc"])
    mask = (1 << 64) - 1
    return np.array([s >> 64, s & mask, inc >> 64, inc & mask, int(st["has_uint32"]),
                     int(st["uinteger"])], dtype=np.uint64)


def unpack_pcg64(words: np.ndarray) -> dict:
    """The ``bit_generator.state`` dict of :func:`pack_pcg64`'s words."""
    w = [int(x) for x in np.asarray(words, dtype=np.uint64)]
    return {"bit_generator": "PCG64",
            "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
            "has_uint32": w[4], "uinteger": w[5]}


def generator_from(words: np.ndarray) -> np.random.Generator:
    gen = np.random.Generator(np.random.PCG64())
    gen.bit_generator.state = unpack_pcg64(words)
    return gen


# ---------------------------------------------------------------------- model layout
class Layout:
    """The flat layout of a model's values, momenta, gradients and topology.

    Parameters
    ----------
    shapes : list of (n_in, n_out)
        The weight matrices.
    srelu : list of int
        Width of each hidden layer that has SReLU parameters, 0 for the others.
    """

    def __init__(self, shapes: list[tuple[int, int]], srelu: list[int]) -> None:
        self.shapes = [(int(a), int(b)) for a, b in shapes]
        self.srelu = [int(s) for s in srelu]
        self.n_layers = len(self.shapes)
        self.n_bias = sum(b for _, b in self.shapes)
        self.n_srelu = 4 * sum(self.srelu)
        self.n_indptr = sum(b + 1 for _, b in self.shapes)

    @classmethod
    def of(cls, model: SparseMLP) -> Layout:
        return cls([lay.shape for lay in model.layers],
                   [0 if a.params is None else a.params.shape[0] for a in model.acts])

    def n_values(self, nnz: list[int]) -> int:
        return int(sum(nnz)) + self.n_bias + self.n_srelu

    def split(self, buf: np.ndarray, nnz: list[int]):
        """Views of a values-layout buffer: (weights per layer, biases per
        layer, SReLU (n, 4) per hidden layer or None)."""
        if buf.size != self.n_values(nnz):
            raise ValueError(f"buffer of {buf.size} values, the layout needs "
                             f"{self.n_values(nnz)}")
        w, b, s = [], [], []
        o = 0
        for n in nnz:
            w.append(buf[o:o + n])
            o += n
        for _, n_out in self.shapes:
            b.append(buf[o:o + n_out])
            o += n_out
        for width in self.srelu:
            if width:
                s.append(buf[o:o + 4 * width].reshape(width, 4))
                o += 4 * width
            else:
                s.append(None)
        return w, b, s

    # ------------------------------------------------------------------ values
    def pack(self, model: SparseMLP, out: np.ndarray | None = None,
             velocity: bool = False) -> np.ndarray:
        """The weights, biases and SReLU parameters of ``model`` (or their
        momenta, with ``velocity``) as one float32 buffer."""
        nnz = model.nnz_per_layer()
        if out is None or out.size != self.n_values(nnz):
            out = np.empty(self.n_values(nnz), dtype=np.float32)
        w, b, s = self.split(out, nnz)
        for lay, wv, bv in zip(model.layers, w, b):
            wv[...] = lay.velocity if velocity else lay.data
            bv[...] = lay.bias_velocity if velocity else lay.bias
        for act, sv in zip(model.acts, s):
            if sv is not None:
                sv[...] = act.velocity if velocity else act.params
        return out

    def unpack(self, model: SparseMLP, buf: np.ndarray, velocity: bool = False) -> None:
        """Write a :meth:`pack` buffer into ``model`` (same topology)."""
        w, b, s = self.split(buf, model.nnz_per_layer())
        for lay, wv, bv in zip(model.layers, w, b):
            (lay.velocity if velocity else lay.data)[...] = wv
            (lay.bias_velocity if velocity else lay.bias)[...] = bv
        for act, sv in zip(model.acts, s):
            if sv is not None:
                (act.velocity if velocity else act.params)[...] = sv

    def pack_gradients(self, grads: list[tuple[np.ndarray, np.ndarray]], sgs: list,
                       out: np.ndarray) -> np.ndarray:
        """The gradients of :meth:`SparseMLP.gradients` in the values layout."""
        w, b, s = self.split(out, [g.size for g, _ in grads])
        for (g, bg), wv, bv in zip(grads, w, b):
            wv[...] = g
            bv[...] = bg
        for sg, sv in zip(sgs, s):
            if sv is not None:
                sv[...] = sg
        return out

    # ------------------------------------------------------------------ topology
    def pack_topology(self, model: SparseMLP) -> tuple[np.ndarray, np.ndarray]:
        """(every layer's indptr concatenated, every layer's indices concatenated)."""
        return (np.concatenate([lay.indptr for lay in model.layers]),
                np.concatenate([lay.indices for lay in model.layers]))

    def topology_buffers(self, nnz: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Empty receive buffers for :meth:`pack_topology`'s arrays."""
        return (np.empty(self.n_indptr, dtype=np.int64),
                np.empty(int(sum(nnz)), dtype=np.int32))

    def split_topology(self, indptr_all: np.ndarray, indices_all: np.ndarray,
                       nnz: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        p = i = 0
        for (_, n_out), n in zip(self.shapes, nnz):
            out.append((indptr_all[p:p + n_out + 1], indices_all[i:i + n]))
            p += n_out + 1
            i += n
        return out

    def layers_from(self, indptr_all: np.ndarray, indices_all: np.ndarray, nnz: list[int],
                    init: str) -> list[SparseLayer]:
        """New layers on a received topology (values zero until unpacked)."""
        layers = []
        for (n_in, n_out), (ip, ix) in zip(self.shapes,
                                           self.split_topology(indptr_all, indices_all, nnz)):
            layers.append(SparseLayer(n_in, n_out, ip.copy(), ix.copy(),
                                      np.zeros(ix.size, dtype=np.float32), init=init,
                                      check=False))
        return layers

    def set_topology(self, model: SparseMLP, indptr_all: np.ndarray, indices_all: np.ndarray,
                     nnz: list[int]) -> None:
        """Give ``model``'s layers a received topology (values and momenta
        zero until unpacked; layers whose topology is unchanged keep theirs)."""
        for lay, (ip, ix) in zip(model.layers,
                                 self.split_topology(indptr_all, indices_all, nnz)):
            if (ix.size == lay.nnz and np.array_equal(ip, lay.indptr)
                    and np.array_equal(ix, lay.indices)):
                continue
            lay.set_topology(ip.copy(), ix.copy(), np.zeros(ix.size, dtype=np.float32),
                             check=False)
        model.release_buffers()

    def nbytes_dense(self) -> int:
        """Bytes of the same model's weights and biases if it were dense (float32)."""
        return 4 * (sum(a * b for a, b in self.shapes) + self.n_bias + self.n_srelu)

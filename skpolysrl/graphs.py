"""Crystal structures -> CGCNN-style structure graphs, built in bulk and cacheable.

Each atom is connected to its ``max_neighbors`` nearest neighbours (periodic
images included) within ``cutoff`` angstrom; an edge carries the distance,
which the encoder expands in Gaussians. Atoms carry no identity: the structure
encoder sees geometry only.

Rules for unusual structures: partially occupied (disordered) sites are
treated as one atom at the site; an atom with no neighbour within the cutoff
gets no incoming edge (its state is then the shared atom vector); structures
with no sites, a singular lattice, non-finite coordinates or an unphysical
density (see :func:`geometry_problem`) raise
:class:`~skpolysrl.exceptions.StructureGraphError`.
"""

import hashlib
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ._arrays import segment_indices
from ._runtime import atomic_write
from .exceptions import GraphCacheError, StructureGraphError

__all__ = ["GraphSettings", "StructureGraphs", "build_structure_graph", "build_structure_graphs",
           "gaussian_expansion", "geometry_problem", "structure_descriptors", "STRUCTURE_DESCRIPTORS",
           "MIN_VOLUME_PER_ATOM"]

_CACHE_VERSION = 1
_CACHE_FORMAT = "skpolysrl-graph-cache"  # the "format" array: our magic inside the .npz (a zip)
_CACHE_ARRAYS = ("version", "fingerprint", "num_nodes", "num_edges", "edge_index", "distances")

#: Smallest volume per atom (cubic angstrom) a structure may have. Solid hydrogen at
#: megabar pressure has ~1.5; below this the input is not a crystal (e.g. a lattice
#: in the wrong units), and the neighbour lists within ``cutoff`` would not fit in memory.
MIN_VOLUME_PER_ATOM = 0.5


def _is_our_cache(path):
    """True if ``path`` is a graph cache written by skpolysrl (a zip of exactly our arrays)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    members = {f"{name}.npy" for name in _CACHE_ARRAYS}
    if not members <= names or not names <= members | {"format.npy"}:
        return False
    if "format.npy" not in names:  # caches of skpolysrl <= 0.1.0 had no magic, only these arrays
        return True
    with np.load(path, allow_pickle=False) as data:
        return str(data["format"]) == _CACHE_FORMAT


def _refuse_foreign(path):
    """Raise GraphCacheError if ``path`` exists and is not a graph cache we wrote (we never overwrite it)."""
    if os.path.lexists(path) and not _is_our_cache(path):
        raise GraphCacheError(
            f"graph cache {path!r} exists and is not a graph cache written by skpolysrl, so it is left "
            "untouched; choose another graph cache path (a new .npz file)"
        )


@dataclass(frozen=True)
class GraphSettings:
    """How crystals become graphs: the defaults of the functions below, and the fields of
    :class:`~skpolysrl.nn.ModelConfig` that a model file stores, so a saved model knows them.

    ``cutoff`` (angstrom) and ``max_neighbors`` choose the edges; distances are
    expanded on Gaussians of ``gaussian_width`` centred every ``gaussian_step``
    from ``gaussian_start`` to ``gaussian_stop`` (41 by default).
    """

    cutoff: float = 8.0
    max_neighbors: int = 12
    gaussian_start: float = 0.0
    gaussian_stop: float = 8.0
    gaussian_step: float = 0.2
    gaussian_width: float = 0.2

    @property
    def n_gaussians(self):
        """Number of Gaussian centres (the structure encoder's edge input width)."""
        return len(np.arange(self.gaussian_start, self.gaussian_stop + self.gaussian_step / 2, self.gaussian_step))

    def graph_kwargs(self):
        """Keyword arguments of :func:`build_structure_graphs`."""
        return {"cutoff": self.cutoff, "max_neighbors": self.max_neighbors}

    def expansion_kwargs(self):
        """Keyword arguments of :func:`gaussian_expansion`."""
        return {"start": self.gaussian_start, "stop": self.gaussian_stop, "step": self.gaussian_step,
                "width": self.gaussian_width}


_DEFAULT = GraphSettings()


@dataclass
class StructureGraphs:
    """Structure graphs of many crystals, stored as flat arrays.

    Attributes
    ----------
    num_nodes : ndarray of shape (n_graphs,)
    num_edges : ndarray of shape (n_graphs,)
    edge_index : ndarray of shape (2, n_edges_total)
        Per-graph local atom indices, row 0 = neighbour (source), row 1 = centre.
    distances : ndarray of shape (n_edges_total,), angstrom
    """

    num_nodes: np.ndarray
    num_edges: np.ndarray
    edge_index: np.ndarray
    distances: np.ndarray

    def __post_init__(self):
        self._edge_ptr = np.concatenate([[0], np.cumsum(self.num_edges)])

    def __len__(self):
        return len(self.num_nodes)

    def collate(self, indices):
        """Concatenate graphs ``indices`` into one disjoint graph.

        Returns
        -------
        edge_index : (2, E) int64, global atom indices
        distances : (E,) float32
        batch : (N,) int64, graph of each atom (0..len(indices)-1)
        """
        indices = np.asarray(indices, dtype=np.int64)
        n_nodes = self.num_nodes[indices]
        n_edges = self.num_edges[indices]
        edge_ids = segment_indices(self._edge_ptr[indices], n_edges)  # every edge of the chosen graphs
        node_shift = np.repeat(np.cumsum(n_nodes) - n_nodes, n_edges)
        edge_index = self.edge_index[:, edge_ids].astype(np.int64) + node_shift
        batch = np.repeat(np.arange(len(indices)), n_nodes)
        return edge_index, self.distances[edge_ids], batch

    def subset(self, indices):
        """The graphs ``indices`` (in that order) as a new :class:`StructureGraphs`."""
        indices = np.asarray(indices, dtype=np.int64)
        edge_ids = segment_indices(self._edge_ptr[indices], self.num_edges[indices])
        return StructureGraphs(self.num_nodes[indices], self.num_edges[indices], self.edge_index[:, edge_ids],
                               self.distances[edge_ids])

    def save(self, path, fingerprint=""):
        """Write the graphs to ``path`` (atomically; refuses to replace a file skpolysrl did not write)."""
        path = os.fspath(path)
        _refuse_foreign(path)
        atomic_write(path, lambda tmp: self._savez(tmp, fingerprint))

    def _savez(self, path, fingerprint):
        with open(path, "wb") as fh:  # a file object: np.savez appends ".npz" to names without it
            np.savez(
                fh,
                format=_CACHE_FORMAT,
                version=_CACHE_VERSION,
                fingerprint=fingerprint,
                num_nodes=self.num_nodes,
                num_edges=self.num_edges,
                edge_index=self.edge_index,
                distances=self.distances,
            )

    @classmethod
    def load(cls, path):
        """Read graphs written by :meth:`save`; returns (graphs, fingerprint)."""
        path = os.fspath(path)
        if not _is_our_cache(path):
            raise GraphCacheError(f"{path!r} is not a graph cache written by skpolysrl")
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != _CACHE_VERSION:
                raise ValueError(f"graph cache {path} has version {int(data['version'])}, expected {_CACHE_VERSION}")
            graphs = cls(data["num_nodes"], data["num_edges"], data["edge_index"], data["distances"])
            return graphs, str(data["fingerprint"])


def geometry_problem(structure):
    """Why ``structure`` is not a usable crystal (a sentence), or None if it is.

    Refused: no sites, non-finite lattice or coordinates, a singular lattice, and
    less than :data:`MIN_VOLUME_PER_ATOM` cubic angstrom per atom.
    """
    n_sites = len(structure)
    if n_sites == 0:
        return "it has no sites"
    matrix = np.asarray(structure.lattice.matrix, dtype=np.float64)
    if not np.isfinite(matrix).all():
        return "its lattice holds NaN or infinite values"
    if not np.isfinite(structure.frac_coords).all():
        return "an atom coordinate is NaN or infinite"
    lengths = np.linalg.norm(matrix, axis=1)
    volume = abs(float(np.linalg.det(matrix)))
    if not volume > 1e-6 * float(np.prod(lengths)):  # also all-zero vectors
        return ("its lattice is singular (volume 0: two lattice vectors are parallel or one is zero); "
                "check the three lattice vectors")
    if volume / n_sites < MIN_VOLUME_PER_ATOM:
        return (f"it has {volume / n_sites:.3g} cubic angstrom per atom, below the physical minimum "
                f"{MIN_VOLUME_PER_ATOM}; check the lattice (units are angstrom) and duplicated sites")
    return None


#: Per-structure quantities :func:`structure_descriptors` can compute, with what each holds.
STRUCTURE_DESCRIPTORS = {
    "log_volume_per_atom": "natural log of the cell volume per atom (cubic angstrom)",
    "log_density": "natural log of the density (g/cm^3)",
}
_AMU_PER_CUBIC_ANGSTROM_IN_G_PER_CM3 = 1.66053906660


def structure_descriptors(structures, names=tuple(STRUCTURE_DESCRIPTORS)):
    """Descriptors of each structure that need no labels: (n, len(names)) float64.

    The default pretraining recipe learns them from the formula (how densely a
    composition packs, :class:`~skpolysrl.recipes.StagedRecipe`). A structure
    that :func:`geometry_problem` refuses gets NaN (unknown), never a number
    from a broken cell.
    """
    unknown = [n for n in names if n not in STRUCTURE_DESCRIPTORS]
    if unknown:
        raise ValueError(f"unknown structure descriptors {unknown}; choose among {list(STRUCTURE_DESCRIPTORS)}")
    out = np.full((len(structures), len(names)), np.nan)
    for i, s in enumerate(structures):
        if geometry_problem(s) is not None:
            continue
        composition = s.composition  # occupancies count: a half-occupied site is half an atom
        volume = float(s.volume)
        values = {"log_volume_per_atom": np.log(volume / composition.num_atoms),
                  "log_density": np.log(composition.weight * _AMU_PER_CUBIC_ANGSTROM_IN_G_PER_CM3 / volume)}
        out[i] = [values[n] for n in names]
    return out


def build_structure_graph(structure, cutoff=_DEFAULT.cutoff, max_neighbors=_DEFAULT.max_neighbors):
    """Edges of one structure: (edge_index (2, E) int32, distances (E,) float32)."""
    problem = geometry_problem(structure)
    if problem is not None:
        raise StructureGraphError(f"structure {structure.composition.formula!r}: {problem}")
    centers, neighbors, _, dists = structure.get_neighbor_list(r=cutoff)
    # keep the max_neighbors nearest per centre: sort by (centre, distance), rank within centre
    order = np.lexsort((dists, centers))
    centers, neighbors, dists = centers[order], neighbors[order], dists[order]
    first = np.searchsorted(centers, centers, side="left")
    keep = (np.arange(len(centers)) - first) < max_neighbors
    edge_index = np.stack([neighbors[keep], centers[keep]]).astype(np.int32)
    return edge_index, dists[keep].astype(np.float32)


def structure_fingerprint(structures, cutoff, max_neighbors):
    """A hash of the structures' geometry and the graph settings (keys the cache)."""
    h = hashlib.sha256(f"v{_CACHE_VERSION}|{cutoff}|{max_neighbors}|{len(structures)}".encode())
    for s in structures:
        h.update(np.round(s.lattice.matrix, 6).tobytes())
        h.update(np.round(s.frac_coords, 6).tobytes())  # graphs are geometry only: species are not needed
    return h.hexdigest()


def build_structure_graphs(structures, cutoff=_DEFAULT.cutoff, max_neighbors=_DEFAULT.max_neighbors, cache=None,
                           progress=False, write_cache=True):
    """Build :class:`StructureGraphs` for a list of pymatgen structures.

    Parameters
    ----------
    structures : sequence of pymatgen Structure
    cutoff : float, default=8.0
        Neighbour radius in angstrom.
    max_neighbors : int, default=12
        Nearest neighbours kept per atom.
    cache : str or path-like, optional
        An ``.npz`` file. If it exists and was built from the same structures
        and settings it is loaded; otherwise the graphs are built and written there.
    progress : bool, default=False
        Show a tqdm progress bar.
    write_cache : bool, default=True
        False: read a valid ``cache`` but never write it (e.g. the processes other
        than rank 0 of a distributed run, which share rank 0's file).
    """
    fingerprint = None
    if cache is not None:
        cache = os.fspath(cache)
        _refuse_foreign(cache)  # before the build: a foreign file fails fast and stays untouched
        directory = os.path.dirname(os.path.abspath(cache))
        if write_cache and not os.path.isdir(directory):
            raise FileNotFoundError(f"the folder of graph cache {cache!r} does not exist; create it or choose "
                                    "another graph cache path")
        fingerprint = structure_fingerprint(structures, cutoff, max_neighbors)
        if os.path.exists(cache):
            try:
                graphs, stored = StructureGraphs.load(cache)
            except Exception:  # an old or damaged cache of ours: rebuild it
                graphs, stored = None, None
            if stored == fingerprint:
                return graphs

    iterator = structures
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(structures, desc="structure graphs", unit="struct")
    num_nodes = np.empty(len(structures), dtype=np.int64)
    num_edges = np.empty(len(structures), dtype=np.int64)
    edges, dists = [], []
    for i, s in enumerate(iterator):
        try:
            e, d = build_structure_graph(s, cutoff, max_neighbors)
        except StructureGraphError as exc:
            raise StructureGraphError(f"{exc} (position {i})") from None
        num_nodes[i] = len(s)
        num_edges[i] = e.shape[1]
        edges.append(e)
        dists.append(d)
    if len(structures) == 0:
        raise StructureGraphError("no structures given")
    graphs = StructureGraphs(num_nodes, num_edges, np.concatenate(edges, axis=1), np.concatenate(dists))
    if cache is not None and write_cache:
        graphs.save(cache, fingerprint)
    return graphs


def gaussian_expansion(distances, start=_DEFAULT.gaussian_start, stop=_DEFAULT.gaussian_stop,
                       step=_DEFAULT.gaussian_step, width=_DEFAULT.gaussian_width):
    """Expand distances (torch tensor, (E,)) on Gaussians centred start..stop (41 by default)."""
    import torch

    centers = torch.arange(start, stop + step / 2, step, device=distances.device, dtype=distances.dtype)
    return torch.exp(-((distances[:, None] - centers) ** 2) / width**2)

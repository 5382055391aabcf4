import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from skpolysrl.exceptions import GraphCacheError, StructureGraphError
from skpolysrl.graphs import build_structure_graph, build_structure_graphs, gaussian_expansion


def reference_edges(structure, cutoff=8.0, k=12):
    """The CGCNN way: get_all_neighbors, sort each atom's list, keep the 12 nearest."""
    out = []
    for center, neighbors in enumerate(structure.get_all_neighbors(cutoff)):
        for nb in sorted(neighbors, key=lambda n: n.nn_distance)[:k]:
            out.append((center, nb.nn_distance))
    return out


def test_graph_matches_reference_on_real_structures(mp_small):
    for structure in mp_small.structure[:25]:
        edge_index, dist = build_structure_graph(structure)
        ref = reference_edges(structure)
        assert edge_index.shape[1] == len(ref)
        for center in range(len(structure)):
            ours = np.sort(dist[edge_index[1] == center])
            theirs = np.sort([d for c, d in ref if c == center])
            np.testing.assert_allclose(ours, theirs, atol=1e-4)
        assert np.all(np.bincount(edge_index[1], minlength=len(structure)) <= 12)


def test_collate_matches_individual_graphs(mp_small):
    structures = list(mp_small.structure[:12])
    graphs = build_structure_graphs(structures)
    picks = [5, 0, 11, 3]
    edge_index, dist, batch = graphs.collate(picks)
    offset = 0
    for g, i in enumerate(picks):
        e, d = build_structure_graph(structures[i])
        mask = batch[edge_index[1]] == g
        np.testing.assert_array_equal(edge_index[:, mask] - offset, e)
        np.testing.assert_allclose(dist[mask], d)
        assert (batch == g).sum() == len(structures[i])
        offset += len(structures[i])


def test_cache_roundtrip_and_invalidation(mp_small, tmp_path):
    structures = list(mp_small.structure[:20])
    path = tmp_path / "graphs.npz"
    first = build_structure_graphs(structures, cache=path)
    assert path.exists()
    mtime = path.stat().st_mtime_ns
    again = build_structure_graphs(structures, cache=path)
    assert path.stat().st_mtime_ns == mtime  # loaded, not rebuilt
    np.testing.assert_array_equal(first.edge_index, again.edge_index)
    np.testing.assert_array_equal(first.distances, again.distances)
    other = build_structure_graphs(structures[:10], cache=path)  # different data -> rebuilt
    assert len(other) == 10
    with np.load(path) as data:  # a cache of ours from another format version -> rebuilt
        np.savez(path, **{**dict(data), "version": np.array(0)})
    assert len(build_structure_graphs(structures, cache=path)) == 20
    path.write_bytes(b"not an npz file")  # not written by skpolysrl -> refused and left as it is
    with pytest.raises(GraphCacheError, match="choose another graph cache path"):
        build_structure_graphs(structures, cache=path)
    assert path.read_bytes() == b"not an npz file"


def test_single_atom_cell_and_isolated_atoms():
    single = Structure(Lattice.cubic(2.9), ["Fe"], [[0, 0, 0]])
    e, d = build_structure_graph(single)
    assert e.shape[1] == 12 and np.all(e == 0)  # periodic images of itself
    np.testing.assert_allclose(np.sort(d)[:6], 2.9, atol=1e-5)
    isolated = Structure(Lattice.cubic(20.0), ["Ar"], [[0, 0, 0]])
    e, d = build_structure_graph(isolated)
    assert e.shape[1] == 0
    graphs = build_structure_graphs([isolated, single])
    edge_index, dist, batch = graphs.collate([0, 1])
    assert batch.tolist() == [0, 1] and edge_index.shape[1] == 12


def test_disordered_structure_is_geometry_only():
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    ordered = Structure(Lattice.cubic(4.0), ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(build_structure_graph(disordered)[1], build_structure_graph(ordered)[1])


def test_empty_inputs_raise():
    with pytest.raises(StructureGraphError):
        build_structure_graphs([])


def test_gaussian_expansion():
    torch = pytest.importorskip("torch")
    g = gaussian_expansion(torch.tensor([0.0, 2.0, 8.0]))
    assert g.shape == (3, 41)
    assert g[1].argmax() == 10 and g[1, 10] == pytest.approx(1.0)
    assert g[2].argmax() == 40


def test_cache_read_only_reads_a_valid_cache_and_never_writes(mp_small, tmp_path):
    from skpolysrl.graphs import build_structure_graphs

    structures = list(mp_small.structure[:20])
    cache = tmp_path / "g.npz"
    build_structure_graphs(structures, cache=cache, write_cache=False)
    assert not cache.exists()
    written = build_structure_graphs(structures, cache=cache)
    read = build_structure_graphs(structures, cache=cache, write_cache=False)
    np.testing.assert_array_equal(read.distances, written.distances)

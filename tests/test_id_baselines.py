"""Two-stage semantic-ID baselines: RQ-KMeans, rq-VAE and hierarchical k-means on tiny CPU data."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from safetensors.numpy import load_file
from sklearn.metrics import adjusted_mutual_info_score

from lmindexer.trainers.id_methods.hkmeans import HierarchicalKMeansQuantizer
from lmindexer.trainers.id_methods.quantizer import CONFIG_FILE, TENSORS_FILE, Quantizer, load_quantizer
from lmindexer.trainers.id_methods.rqkmeans import RQKMeansQuantizer
from lmindexer.trainers.id_methods.rqvae import RQVAEQuantizer

TINY_RQVAE = dict(hidden_dims=[32], latent_dim=8, epochs=3, batch_size=64)
METHODS = {
    "rqkmeans": (RQKMeansQuantizer, {"niter": 10}),
    "hkmeans": (HierarchicalKMeansQuantizer, {"niter": 10}),
    "rqvae": (RQVAEQuantizer, TINY_RQVAE),
}


def gaussian_mixture(count=300, dim=8, clusters=6, spread=6.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(clusters, dim))
    labels = rng.integers(clusters, size=count)
    return (centers[labels] + rng.normal(size=(count, dim))).astype(np.float32), labels


def build(method: str, id_length=3, sizes=(6, 5, 4), seed=0, **overrides) -> Quantizer:
    cls, settings = METHODS[method]
    return cls(id_length, list(sizes), seed=seed, **{**settings, **overrides})


@pytest.fixture(scope="module")
def vectors():
    return gaussian_mixture()[0]


@pytest.mark.parametrize("method", METHODS)
def test_codes_inside_codebooks_and_seed_reproducible(method, vectors):
    codes = build(method).fit(vectors)
    assert codes.dtype == np.int64 and codes.shape == (len(vectors), 3)
    assert (codes >= 0).all() and (codes < np.array([6, 5, 4])).all()
    np.testing.assert_array_equal(build(method).fit(vectors), codes)


@pytest.mark.parametrize("method", METHODS)
def test_assign_on_training_vectors_reproduces_fit(method, vectors):
    quantizer = build(method, seed=3)
    codes = quantizer.fit(vectors)
    np.testing.assert_array_equal(quantizer.assign(vectors), codes)
    # Row-wise too: a document's code must not depend on which other documents are assigned with it.
    np.testing.assert_array_equal(quantizer.assign(vectors[::7]), codes[::7])


@pytest.mark.parametrize("method", METHODS)
def test_save_load_round_trip(method, vectors, tmp_path):
    quantizer = build(method, seed=2)
    quantizer.fit(vectors)
    quantizer.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["name"] == method and len(config["levels"]) == 3 and config["dim"] == vectors.shape[1]
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files behind

    loaded = load_quantizer(tmp_path)
    assert type(loaded) is type(quantizer) and loaded.settings_dict() == quantizer.settings_dict()
    assert type(quantizer).load(tmp_path).settings_dict() == quantizer.settings_dict()
    original, reloaded = quantizer._state_tensors(), loaded._state_tensors()
    assert original.keys() == reloaded.keys() == load_file(str(tmp_path / TENSORS_FILE)).keys()
    for name in original:
        np.testing.assert_array_equal(original[name], reloaded[name])
    fresh = gaussian_mixture(count=50, seed=9)[0]
    np.testing.assert_array_equal(loaded.assign(vectors), quantizer.assign(vectors))
    np.testing.assert_array_equal(loaded.assign(fresh), quantizer.assign(fresh))


@pytest.mark.parametrize("method", METHODS)
def test_bad_inputs_fail_with_one_clear_line(method, vectors):
    with pytest.raises(ValueError, match="empty"):
        build(method).fit(np.zeros((0, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        build(method).fit(np.zeros(8, dtype=np.float32))
    poisoned = vectors.copy()
    poisoned[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite.*row 4"):
        build(method).fit(poisoned)
    with pytest.raises(ValueError, match=r"at least 50 documents.*got 20"):
        build(method, sizes=(50, 5, 4)).fit(vectors[:20])
    with pytest.raises(ValueError, match="id_length"):
        build(method, id_length=0, sizes=())
    with pytest.raises(ValueError, match="3 entries but id_length is 2"):
        build(method, id_length=2)
    with pytest.raises(ValueError, match="no setting"):
        build(method, learning_rate_typo=1.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        build(method).assign(vectors)
    quantizer = build(method)
    quantizer.fit(vectors)
    with pytest.raises(ValueError, match="fitted on 8-dim"):
        quantizer.assign(vectors[:, :4])


def test_load_quantizer_refuses_unknown_name_and_wrong_class(vectors, tmp_path):
    quantizer = build("rqkmeans")
    quantizer.fit(vectors)
    quantizer.save(tmp_path)
    with pytest.raises(ValueError, match="holds a rqkmeans quantizer"):
        HierarchicalKMeansQuantizer.load(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**config, "name": "vqgan"}))
    with pytest.raises(ValueError, match="Unknown quantizer 'vqgan'"):
        load_quantizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no saved quantizer"):
        load_quantizer(tmp_path / "missing")


def test_codebook_sizes_as_one_int(vectors):
    quantizer = RQKMeansQuantizer(2, 4)
    assert quantizer.codebook_sizes == [4, 4]
    assert quantizer.fit(vectors).max() <= 3


# ------------------------------------------------------------------------------------------------- RQ-KMeans
def test_rqkmeans_level_one_is_plain_faiss_kmeans(vectors):
    quantizer = RQKMeansQuantizer(2, [6, 4], seed=5, niter=25)
    codes = quantizer.fit(vectors)
    direct = faiss.Kmeans(vectors.shape[1], 6, niter=25, seed=5, max_points_per_centroid=10_000)
    direct.train(vectors)
    _, nearest = direct.index.search(vectors, 1)
    np.testing.assert_array_equal(codes[:, 0], nearest[:, 0])
    np.testing.assert_allclose(quantizer.codebooks[0], direct.centroids)


def test_rqkmeans_later_levels_cluster_residuals(vectors):
    quantizer = RQKMeansQuantizer(3, [6, 5, 4], seed=0)
    codes = quantizer.fit(vectors)
    errors = [
        np.linalg.norm(vectors - sum(quantizer.codebooks[t][codes[:, t]] for t in range(depth + 1)), axis=1).mean()
        for depth in range(3)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert np.linalg.norm(vectors - quantizer.reconstruct(codes), axis=1).mean() == pytest.approx(errors[2], rel=1e-5)


# ------------------------------------------------------------------------------------------ hierarchical k-means
def test_hkmeans_groups_with_at_most_k_members_get_codes_in_corpus_order():
    rng = np.random.default_rng(1)
    centers = np.eye(4, 6, dtype=np.float32) * 100
    sizes = [3, 2, 12, 4]  # with K=4 at level 2, groups of up to 4 are not clustered
    vectors = np.concatenate([centers[i] + rng.normal(size=(n, 6)) for i, n in enumerate(sizes)]).astype(np.float32)
    vectors = vectors[rng.permutation(len(vectors))]
    quantizer = HierarchicalKMeansQuantizer(2, [4, 4], seed=0)
    codes = quantizer.fit(vectors)
    group_sizes = np.bincount(codes[:, 0], minlength=4)
    assert (group_sizes <= 4).any() and (group_sizes > 4).any()
    assert quantizer.clustered_groups_per_level == [1, int((group_sizes > 4).sum())]
    for first in range(4):
        members = np.flatnonzero(codes[:, 0] == first)
        if len(members) <= 4:
            np.testing.assert_array_equal(codes[members, 1], np.arange(len(members)))
            np.testing.assert_array_equal(quantizer.groups[(first,)], vectors[members])
        else:
            assert set(codes[members, 1]) == {0, 1, 2, 3}
    np.testing.assert_array_equal(quantizer.assign(vectors), codes)


def test_hkmeans_codes_are_local_to_their_prefix(vectors, tmp_path):
    quantizer = HierarchicalKMeansQuantizer(3, [3, 3, 3], seed=0)
    codes = quantizer.fit(vectors)
    assert len({tuple(row) for row in codes}) > 9  # deeper levels split every group separately
    quantizer.save(tmp_path)
    loaded = load_quantizer(tmp_path)
    assert loaded.groups.keys() == quantizer.groups.keys()
    np.testing.assert_array_equal(loaded.assign(vectors), codes)


# ------------------------------------------------------------------------------------------------------ rq-VAE
def test_rqvae_learns_a_gaussian_mixture():
    vectors, labels = gaussian_mixture(count=800, dim=16, clusters=8, spread=5.0, seed=4)
    quantizer = RQVAEQuantizer(
        2, [8, 8], seed=0, hidden_dims=[64, 32], latent_dim=8, epochs=25, batch_size=64, learning_rate=3e-3
    )
    codes = quantizer.fit(vectors)
    history = [epoch["reconstruction"] for epoch in quantizer.history]
    assert history[-1] < 0.5 * history[0]
    assert adjusted_mutual_info_score(labels, codes[:, 0]) > 0.9
    reconstruction = quantizer.reconstruct(codes)
    assert np.mean((reconstruction - vectors) ** 2) < np.mean((vectors - vectors.mean(0)) ** 2)


def test_rqvae_device_and_progress_are_not_model_settings(vectors, tmp_path):
    quantizer = RQVAEQuantizer(2, [4, 4], seed=0, progress=True, device="cpu", **{**TINY_RQVAE, "epochs": 1})
    quantizer.fit(vectors)
    assert "progress" not in quantizer.settings_dict() and quantizer.settings_dict()["device"] == "cpu"
    quantizer.save(tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["training_history"][0]["epoch"] == 1


def test_rqvae_reseeds_dead_codes_but_not_after_the_last_epoch(vectors):
    quantizer = RQVAEQuantizer(2, [64, 8], seed=0, **{**TINY_RQVAE, "epochs": 4})
    codes = quantizer.fit(vectors)
    reseeded = [epoch["reseeded_codes"] for epoch in quantizer.history]
    assert sum(reseeded) > 0 and reseeded[-1] == 0
    np.testing.assert_array_equal(quantizer.assign(vectors), codes)


def test_random_ids_keep_the_contract_and_carry_no_semantics(vectors, tmp_path):
    from lmindexer.trainers.id_methods.random_ids import RandomQuantizer

    many, labels = gaussian_mixture(count=3000, clusters=6, seed=4)
    quantizer = RandomQuantizer(2, [8, 4], seed=5)
    codes = quantizer.fit(many)
    np.testing.assert_array_equal(quantizer.assign(many[::3]), codes[::3])
    assert (codes < np.array([8, 4])).all() and (codes >= 0).all()
    # Uniform: every code used about equally (3000 / 8 = 375 expected per first-level code).
    counts = np.bincount(codes[:, 0], minlength=8)
    assert counts.min() > 300 and counts.max() < 450
    # No semantics: the codes say nothing about the mixture component, unlike any learned method's.
    assert abs(adjusted_mutual_info_score(labels, codes[:, 0])) < 0.01
    assert not np.array_equal(RandomQuantizer(2, [8, 4], seed=6).fit(many), codes)
    quantizer.save(tmp_path)
    np.testing.assert_array_equal(load_quantizer(tmp_path).assign(many), codes)

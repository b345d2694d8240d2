"""Dataset readers and downloads, on real Fashion-MNIST images and archives built from them."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import re
import shutil
import socket
import struct
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from phaseguard.data import Dataset, download, list_datasets, load_dataset
from phaseguard.data.readers import idx, tiny_imagenet
from phaseguard.errors import DataError

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user data folders or caches: ./data, $PHASEGUARD_DATA and ~/.cache are in tmp_path."""
    monkeypatch.delenv("PHASEGUARD_DATA", raising=False)
    monkeypatch.delenv("PHASEGUARD_DOWNLOAD_URL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The real Fashion-MNIST, found at its Debian default place (root None)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PHASEGUARD_DATA", raising=False)
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        return load_dataset("fashion-mnist")


@pytest.fixture(scope="module")
def rgb(fashion: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """60 real images as uint8 [60, 3, 32, 32] with distinct channels, and their labels."""
    gray = np.pad(fashion.x_train[:60, 0].numpy(), ((0, 0), (2, 2), (2, 2)))
    x = np.stack([gray, 255 - gray, gray.transpose(0, 2, 1)], axis=1)
    return np.ascontiguousarray(x), fashion.y_train[:60].numpy()


# --- builders of files in the official formats ----------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 ``array`` as an IDX file, gzipped if ``path`` ends with .gz."""
    header = (0x800 | array.ndim).to_bytes(4, "big") + np.array(array.shape, ">u4").tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def write_cifar(
    parent: Path, x: np.ndarray, y: np.ndarray, *, fine: bool = False, protocol: int = 2
) -> Path:
    """Write the official CIFAR-10 (or CIFAR-100 if ``fine``) folder under ``parent``."""
    folder = parent / ("cifar-100-python" if fine else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    label_key = b"fine_labels" if fine else b"labels"

    def dump(name: str, content: dict) -> None:
        (folder / name).write_bytes(pickle.dumps(content, protocol=protocol))

    def batch(name: str, images: np.ndarray, labels: np.ndarray) -> None:
        dump(
            name,
            {
                b"batch_label": name.encode(),
                label_key: labels.tolist(),
                b"data": images.reshape(len(images), -1),
                b"filenames": [f"{i}.png".encode() for i in range(len(images))],
            },
        )

    x_train, y_train, x_test, y_test = x[:50], y[:50], x[50:], y[50:]
    if fine:
        batch("train", x_train, y_train)
        batch("test", x_test, y_test)
        dump(
            "meta",
            {
                b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
            },
        )
    else:
        for k, part in enumerate(np.array_split(np.arange(50), 5), 1):
            batch(f"data_batch_{k}", x_train[part], y_train[part])
        batch("test_batch", x_test, y_test)
        dump(
            "batches.meta",
            {
                b"label_names": [f"name{i}".encode() for i in range(10)],
                b"num_cases_per_batch": 10,
                b"num_vis": 3072,
            },
        )
    return folder


def tar_gz(folder: Path, archive: Path) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def rx(path: Path) -> str:
    """``path`` as a regular expression matching itself."""
    return re.escape(str(path))


def same(tensor: torch.Tensor, array: np.ndarray) -> bool:
    return np.array_equal(tensor.numpy(), array)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- Fashion-MNIST and IDX ------------------------------------------------------------------


def test_fashion_mnist_from_debian_package(fashion: Dataset) -> None:
    assert fashion.name == "fashion-mnist"
    assert fashion.x_train.shape == (60000, 1, 28, 28)
    assert fashion.x_test.shape == (10000, 1, 28, 28)
    assert fashion.x_train.dtype == torch.uint8 and fashion.y_train.dtype == torch.int64
    assert fashion.image_shape == (1, 28, 28) and fashion.num_classes == 10
    assert fashion.y_train.unique().tolist() == list(range(10))
    assert fashion.y_test.unique().tolist() == list(range(10))
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[9] == "Ankle boot"


def test_fashion_mnist_gunzipped_via_env(
    fashion: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "store" / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in IDX_FILES:
        with gzip.open(FASHION_ROOT / f"{name}.gz") as src, open(folder / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    monkeypatch.setenv("PHASEGUARD_DATA", str(tmp_path / "store"))
    plain = load_dataset("fashion-mnist")
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(plain, field), getattr(fashion, field))
    assert plain.classes == fashion.classes


def write_idx_set(folder: Path, images: np.ndarray, labels: np.ndarray, suffix: str = "") -> Path:
    """The 4 IDX files of a dataset: the first 40 images train, the rest test."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (images[:40], labels[:40], images[40:], labels[40:])
    for name, array in zip(IDX_FILES, arrays):
        write_idx(folder / f"{name}{suffix}", array)
    return folder


def test_mnist_reads_idx_files(rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, y = rgb[0][:, 0], rgb[1]
    write_idx_set(tmp_path / "data" / "mnist", x, y)  # ./data/<name>, a default place
    mnist = load_dataset("mnist")
    assert same(mnist.x_train[:, 0], x[:40]) and same(mnist.y_test, y[40:])
    assert mnist.classes == [str(d) for d in range(10)]


@pytest.mark.parametrize("cut", [1, 10, 1000])
def test_truncated_idx_file_is_refused(
    rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path, cut: int
) -> None:
    folder = write_idx_set(tmp_path, rgb[0][:, 0], rgb[1])
    images = folder / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-cut])
    with pytest.raises(DataError, match=f"{rx(images)} is truncated"):
        load_dataset("fashion-mnist", folder)


def test_truncated_gzip_and_bad_magic_are_refused(
    rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    folder = write_idx_set(tmp_path, rgb[0][:, 0], rgb[1], ".gz")
    images = folder / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match=f"cannot read {rx(images)}"):
        load_dataset("fashion-mnist", folder)
    write_idx(images, np.zeros((3, 4), np.uint8))  # a 2-d file where 3-d images are expected
    with pytest.raises(DataError, match=f"{rx(images)} is not an IDX file of 3-d"):
        load_dataset("fashion-mnist", folder)


def test_missing_fashion_mnist_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idx, "FASHION_DEBIAN_ROOT", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as error:
        load_dataset("fashion-mnist")
    assert "\n" not in str(error.value)


# --- CIFAR ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fine", [False, True], ids=["cifar10", "cifar100"])
@pytest.mark.parametrize("form", ["archive", "folder", "parent-of-folder", "parent-of-archive"])
def test_cifar_official_layout(
    rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path, fine: bool, form: str
) -> None:
    x, y = rgb
    folder = write_cifar(tmp_path / "extracted", x, y, fine=fine)
    archive = tar_gz(
        folder,
        tmp_path / "packed" / ("cifar-100-python.tar.gz" if fine else "cifar-10-python.tar.gz"),
    )
    root = {
        "archive": archive,
        "folder": folder,
        "parent-of-folder": folder.parent,
        "parent-of-archive": archive.parent,
    }[form]
    name = "cifar100" if fine else "cifar10"
    data = load_dataset(name, root)
    assert data.name == name and data.image_shape == (3, 32, 32)
    assert same(data.x_train, x[:50]) and same(data.x_test, x[50:])
    assert same(data.y_train, y[:50]) and same(data.y_test, y[50:])
    assert data.classes[:2] == (["fine0", "fine1"] if fine else ["name0", "name1"])
    assert data.num_classes == (100 if fine else 10)


@pytest.mark.parametrize("protocol", [0, 4, 5])
def test_cifar_pickled_by_python3(
    rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path, protocol: int
) -> None:
    folder = write_cifar(tmp_path, *rgb, protocol=protocol)
    assert same(load_dataset("cifar10", folder).x_train, rgb[0][:50])


def python2_batch(data: np.ndarray, labels: np.ndarray) -> bytes:
    """A batch pickled as Python 2's cPickle wrote the official files (str, not bytes)."""

    def text(value: bytes) -> bytes:  # BINSTRING: a Python 2 str
        return b"T" + struct.pack("<I", len(value)) + value

    def num(value: int) -> bytes:  # BININT
        return b"J" + struct.pack("<i", value)

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + num(0)
        + b"\x85"
        + text(b"b")
        + b"\x87R("
        + num(1)
        + num(len(data))
        + num(data.shape[1])
        + b"\x86"
        + b"cnumpy\ndtype\n"
        + text(b"u1")
        + num(0)
        + num(1)
        + b"\x87R("
        + num(3)
        + text(b"|")
        + b"NNN"
        + num(-1)
        + num(-1)
        + num(0)
        + b"tb\x89"
        + text(data.tobytes())
        + b"tb"
    )
    label_list = b"](" + b"".join(num(int(v)) for v in labels) + b"e"
    return b"\x80\x02}(" + text(b"data") + array + text(b"labels") + label_list + b"u."


def test_cifar_pickled_by_python2(rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, y = rgb
    folder = write_cifar(tmp_path, x, y)
    (folder / "data_batch_1").write_bytes(python2_batch(x[:10].reshape(10, -1), y[:10]))
    data = load_dataset("cifar10", folder)
    assert same(data.x_train, x[:50]) and same(data.y_train, y[:50])


def test_cifar_pickle_cannot_run_code(rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return os.system, (f"echo pwned > {marker}",)

    folder = write_cifar(tmp_path, *rgb)
    batch = folder / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}))
    with pytest.raises(DataError, match=f"{rx(batch)}: refusing to load .*system"):
        load_dataset("cifar10", folder)
    assert not marker.exists()


def test_broken_cifar_archives_are_refused(
    rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    folder = write_cifar(tmp_path / "x", *rgb)
    archive = tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{rx(archive)} is not a readable .tar.gz"):
        load_dataset("cifar10", archive)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match=f"{rx(folder)} lacks cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", folder)
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(")  # a pickle cut short
    with pytest.raises(DataError, match=f"{rx(folder)}/test_batch is not a readable pickle"):
        load_dataset("cifar10", folder)


def test_missing_cifar_names_places_and_download(tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=f"not found in {rx(tmp_path)}/nowhere.*phaseguard data download cifar10 --root DIR",
    ):
        load_dataset("cifar10", tmp_path / "nowhere")
    with pytest.raises(DataError, match="not found in data/cifar100"):
        load_dataset("cifar100")


# --- SVHN, Tiny-ImageNet, npz ---------------------------------------------------------------


def test_svhn_mat_files(rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, y = rgb
    for name, part in (("train_32x32.mat", slice(0, 40)), ("test_32x32.mat", slice(40, 60))):
        mat_y = np.where(y[part] == 0, 10, y[part]).astype(np.uint8)[:, None]  # digit 0 is 10
        scipy.io.savemat(tmp_path / name, {"X": x[part].transpose(2, 3, 1, 0), "y": mat_y})
    svhn = load_dataset("svhn", tmp_path)
    assert same(svhn.x_train, x[:40]) and same(svhn.x_test, x[40:])
    assert same(svhn.y_train, y[:40]) and svhn.y_test.min() == 0
    assert svhn.classes == [str(d) for d in range(10)]
    test = tmp_path / "test_32x32.mat"
    test.write_bytes(test.read_bytes()[:300])
    with pytest.raises(DataError, match=f"cannot read {rx(test)}"):
        load_dataset("svhn", tmp_path)
    scipy.io.savemat(test, {"X": x[:3].transpose(2, 3, 1, 0), "y": np.array([[1], [0], [2]])})
    with pytest.raises(DataError, match=f"{rx(test)}: y contains 0"):
        load_dataset("svhn", tmp_path)


def write_tiny_imagenet(parent: Path, fashion: Dataset) -> Path:
    """A 2-class tiny-imagenet-200 folder: 3 train images per class, 4 val images."""
    folder = parent / "tiny-imagenet-200"
    wnids = ["n01443537", "n09999999"]
    images = iter(fashion.x_test[:, 0].numpy())

    def save(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(next(images)).resize((64, 64)).convert("RGB").save(path, quality=95)

    for wnid in wnids:
        for k in range(3):
            save(folder / "train" / wnid / "images" / f"{wnid}_{k}.JPEG")
    for k in range(4):
        save(folder / "val" / "images" / f"val_{k}.JPEG")
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("n00001740\tentity\nn01443537\tgoldfish, Carassius auratus\n")
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"val_{k}.JPEG\t{wnids[k % 2]}\t0\t0\t63\t63\n" for k in range(4))
    )
    return folder


def decoded(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)


def test_tiny_imagenet_and_its_cache(
    fashion: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_tiny_imagenet(tmp_path, fashion)
    data = load_dataset("tiny-imagenet", tmp_path)
    assert data.x_train.shape == (6, 3, 64, 64) and data.x_test.shape == (4, 3, 64, 64)
    assert data.y_train.tolist() == [0, 0, 0, 1, 1, 1] and data.y_test.tolist() == [0, 1, 0, 1]
    assert data.classes == ["goldfish", "n09999999"]  # words.txt lacks the second wnid
    first = folder / "train" / "n01443537" / "images" / "n01443537_0.JPEG"
    assert same(data.x_train[0], decoded(first))
    assert same(data.x_test[3], decoded(folder / "val/images/val_3.JPEG"))
    cache = tmp_path / "tiny-imagenet-200.phaseguard-cache.npz"
    assert cache.is_file()

    def no_decoding(files: list[Path]) -> np.ndarray:
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(tiny_imagenet, "_decode", no_decoding)
        again = load_dataset("tiny-imagenet", folder)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.x_test, data.x_test)

    shutil.copy(first, first.with_name("n01443537_3.JPEG"))  # a changed folder: cache is stale
    assert len(load_dataset("tiny-imagenet", folder).x_train) == 7


def test_tiny_imagenet_cache_falls_back_to_user_cache(fashion: Dataset, tmp_path: Path) -> None:
    folder = write_tiny_imagenet(tmp_path, fashion)
    (tmp_path / "tiny-imagenet-200.phaseguard-cache.npz").mkdir()  # beside: not writable
    data = load_dataset("tiny-imagenet", folder)
    [cached] = (tmp_path / "xdg-cache" / "phaseguard").glob("tiny-imagenet-*.npz")
    with np.load(cached) as arrays:
        assert np.array_equal(arrays["x_train"], data.x_train.numpy())


def test_tiny_imagenet_bad_inputs(fashion: Dataset, tmp_path: Path) -> None:
    folder = write_tiny_imagenet(tmp_path, fashion)
    small = folder / "val" / "images" / "val_2.JPEG"
    Image.new("RGB", (32, 32)).save(small)
    with pytest.raises(DataError, match=f"{rx(small)} is 32x32, not 64x64"):
        load_dataset("tiny-imagenet", folder)
    annotations = folder / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn123\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=f"{rx(annotations)} line 1: class 'n123'"):
        load_dataset("tiny-imagenet", folder)


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW", "NHWC-gray", "float"])
def test_npz_layouts(rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path, layout: str) -> None:
    x, y = rgb  # [N, 3, H, W]
    expected = {"NHW": x[:, :1], "NHWC-gray": x[:, :1]}.get(layout, x)
    stored = {
        "NHW": x[:, 0],
        "NHWC": x.transpose(0, 2, 3, 1),
        "NCHW": x,
        "NHWC-gray": x[:, :1].transpose(0, 2, 3, 1),
        "float": x / 255.0,
    }[layout]
    path = save_npz(
        tmp_path / "d.npz",
        x_train=stored[:50],
        y_train=y[:50],
        x_test=stored[50:],
        y_test=y[50:, None],
    )
    data = load_dataset("npz", path)
    assert same(data.x_train, expected[:50]) and same(data.y_test, y[50:])
    assert data.classes == [str(k) for k in range(int(y.max()) + 1)]


def test_npz_class_names_from_the_default_place(
    rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = rgb
    (tmp_path / "data" / "npz").mkdir(parents=True)
    names = np.array([f"c{k}" for k in range(10)])
    save_npz(
        tmp_path / "data" / "npz" / "mine.npz",
        x_train=x,
        y_train=y,
        x_test=x,
        y_test=y,
        classes=names,
    )
    data = load_dataset("npz")  # the only .npz in ./data/npz
    assert data.classes[3] == "c3" and len(data.x_test) == 60


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"y_train": np.full(60, 7), "classes": np.array(["a", "b", "c"])},
            r"y_train contains label 7, outside \[0, 3\)",
        ),
        ({"x_train": np.zeros((60, 5), np.uint8)}, r"'x_train' has shape \[60, 5\]"),
        ({"x_test": np.zeros((60, 3, 32, 32), np.int64)}, "'x_test' is int64; expected uint8"),
        ({"x_test": np.full((60, 3, 32, 32), 2.0)}, r"'x_test' is float but not within \[0, 1\]"),
        ({"y_test": np.zeros(60, np.float32)}, "'y_test' must be integer labels"),
        ({"y_test": np.zeros(59, np.int64)}, "x_test has 60 images but y_test has 59 labels"),
        ({"x_test": np.zeros((60, 3, 28, 28), np.uint8)}, r"test images are \[3, 28, 28\]"),
        ({"classes": np.array([{"a": 1}], dtype=object)}, "Object arrays cannot be loaded"),
    ],
)
def test_npz_bad_inputs(
    rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path, change: dict, message: str
) -> None:
    x, y = rgb
    path = save_npz(
        tmp_path / "bad.npz", **{"x_train": x, "y_train": y, "x_test": x, "y_test": y, **change}
    )
    with pytest.raises(DataError, match=f"{rx(path)}.*{message}|{message}.*{rx(path)}"):
        load_dataset("npz", path)


def test_npz_missing_key_and_garbage(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "partial.npz", x_train=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match=f"{rx(path)} lacks y_train, x_test, y_test"):
        load_dataset("npz", path)
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=f"cannot read {rx(path)}"):
        load_dataset("npz", path)


def test_unknown_dataset_lists_known_names() -> None:
    assert {"cifar10", "cifar100", "svhn", "tiny-imagenet", "mnist", "fashion-mnist", "npz"} == set(
        list_datasets()
    )
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; known datasets: cifar10"):
        load_dataset("imagenet")


def test_validate_checks_tensors_directly() -> None:
    x = torch.zeros(4, 2, 8, 8, dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(DataError, match="x_train has 2 channels"):
        Dataset("toy", x, y, x, y, ["a"]).validate()
    with pytest.raises(DataError, match="y_test must be an int64 tensor"):
        Dataset("toy", x[:, :1], y, x[:, :1], y.int(), ["a"]).validate()


# --- download -------------------------------------------------------------------------------


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, rgb: tuple[np.ndarray, np.ndarray]
) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server with a small cifar-10-python.tar.gz and Fashion-MNIST gz files."""
    www = tmp_path_factory.mktemp("www")
    folder = write_cifar(tmp_path_factory.mktemp("cifar"), *rgb)
    tar_gz(folder, www / "cifar-10-python.tar.gz")
    write_idx_set(www, rgb[0][:, 0, 2:30, 2:30], rgb[1], ".gz")
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(www))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", www
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_then_load(
    server: tuple[str, Path], rgb: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    url, www = server
    sums = {p.name: md5(p) for p in www.iterdir()}
    root = tmp_path / "downloads"
    folder = download("cifar10", root, base_url=url, progress=False, checksums=sums)
    assert folder == root / "cifar10"
    assert [p.name for p in folder.iterdir()] == ["cifar-10-python.tar.gz"]
    assert same(load_dataset("cifar10", root).x_train, rgb[0][:50])
    download("fashion-mnist", root, base_url=url, progress=False, checksums=sums)
    fashion = load_dataset("fashion-mnist", root)
    assert fashion.x_test.shape == (20, 1, 28, 28)
    assert same(fashion.y_train, rgb[1][:40])
    # Files already present with the right checksum are not fetched again.
    download("cifar10", root, base_url="http://127.0.0.1:9/", progress=False, checksums=sums)


def test_download_url_from_environment(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, www = server
    monkeypatch.setenv("PHASEGUARD_DOWNLOAD_URL", url)
    archive = www / "cifar-10-python.tar.gz"
    download("cifar10", tmp_path, progress=False, checksums={archive.name: md5(archive)})
    assert (tmp_path / "cifar10" / archive.name).is_file()


def test_download_refuses_wrong_checksum(server: tuple[str, Path], tmp_path: Path) -> None:
    url, www = server
    got = md5(www / "cifar-10-python.tar.gz")
    published = "c58f30108f718f92721af3b95e74349a"
    with pytest.raises(DataError, match=f"expected md5 {published}, got {got}"):
        download("cifar10", tmp_path, base_url=url, progress=False)
    assert list((tmp_path / "cifar10").iterdir()) == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_download_failures_are_one_line(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(DataError, match="could not download http://127.0.0.1:.*/cifar-10-python"):
        download("cifar10", tmp_path, base_url=f"http://127.0.0.1:{free_port()}", progress=False)
    with pytest.raises(DataError, match="could not download .*train_32x32.mat: HTTP Error 404"):
        download("svhn", tmp_path, base_url=url, progress=False)
    assert list((tmp_path / "svhn").iterdir()) == []
    with pytest.raises(DataError, match="cannot download 'mnist'; downloadable datasets: cifar10"):
        download("mnist", tmp_path)

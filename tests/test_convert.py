"""sam-lite convert: VIA, labelme and index-PNG fixtures written here -> COCO that CocoConcepts reads with the masks
where they were drawn; malformed input -> one error line naming the file, exit status 2, nothing written."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_lite.cli import main
from sam_lite.data import CocoConcepts
from sam_lite.data.convert import ConvertError, convert_index_png, convert_labelme, convert_via



def _shared() -> Path:
    """``../shared`` next to the repository, or next to the main checkout when this is a git worktree."""
    repo = Path(__file__).resolve().parents[1]
    git = repo / ".git"
    if git.is_file() and git.read_text().startswith("gitdir:"):  # .../main/.git/worktrees/NAME
        main_repo = Path(git.read_text().split(":", 1)[1].strip()).parents[2]
        if not (repo.parent / "shared").is_dir():
            return main_repo.parent / "shared"
    return repo.parent / "shared"


BALLOON = _shared() / "data" / "balloon"
H, W = 48, 64


def photo(path: Path, boxes=(), size=(H, W), exif_orientation: int | None = None) -> Path:
    """A grey photo with filled boxes (x0, y0, x1, y1), pixels x0..x1-1 / y0..y1-1, in different colours."""
    img = np.full((*size, 3), 120, np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        img[y0:y1, x0:x1] = [(220, 30, 30), (30, 60, 210), (40, 170, 50)][k % 3]
    im = Image.fromarray(img)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(path, exif=exif.tobytes(), quality=95)
    else:
        im.save(path)
    return path


def box_mask(x0, y0, x1, y1, size=(H, W)) -> np.ndarray:
    m = np.zeros(size, bool)
    m[y0:y1, x0:x1] = True
    return m


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["convert", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def tree_digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def masks_by_category(coco: CocoConcepts, file_name: str) -> dict[str, list[np.ndarray]]:
    iid = next(i for i in coco.image_ids if coco.image_info(i)["file_name"] == file_name)
    out: dict[str, list[np.ndarray]] = {}
    for a in coco.image_annotations(iid):
        out.setdefault(coco.categories[a["category_id"]]["name"], []).append(coco.ann_mask(a))
    return out


# --- VIA ----------------------------------------------------------------------------------------------------------
def via_region(x0, y0, x1, y1, kind=None):
    """A polygon on the boundary pixels of box (x0, y0, x1, y1), as VIA records clicks (pixel indices)."""
    xs, ys = [x0, x1 - 1, x1 - 1, x0], [y0, y0, y1 - 1, y1 - 1]
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": {"kind": kind} if kind else {}}


def write_via(root: Path, regions_a=None) -> Path:
    photo(root / "a.jpg", [(5, 5, 25, 20), (35, 20, 60, 44)])
    photo(root / "b.png", [(10, 10, 30, 30)])
    photo(root / "c.png")  # nothing in it: a photo with no region
    regions_a = regions_a if regions_a is not None else {
        "0": via_region(5, 5, 25, 20, "cat"),
        "1": {"shape_attributes": {"name": "rect", "x": 35, "y": 20, "width": 24, "height": 23},
              "region_attributes": {"kind": "dog"}}}
    data = {"a.jpg123": {"filename": "a.jpg", "size": 123, "regions": regions_a, "file_attributes": {}},
            "b.png9": {"filename": "b.png", "size": 9, "file_attributes": {},  # VIA 2: regions as a list
                       "regions": [{"shape_attributes": {"name": "circle", "cx": 19.5, "cy": 19.5, "r": 10},
                                    "region_attributes": {"kind": "cat"}}]},
            "c.png1": {"filename": "c.png", "size": 1, "regions": {}, "file_attributes": {}}}
    (root / "via_region_data.json").write_text(json.dumps(data))
    return root


def test_via_masks_where_drawn(tmp_path, capsys):
    src = write_via(tmp_path / "src")
    before = tree_digest(src)
    rc, out, err = run_cli(["via", str(src), "--category-attribute", "kind", "--out", str(tmp_path / "ds")], capsys)
    assert rc == 0, err
    assert "3 photos, 3 annotations, 2 categories" in out
    assert tree_digest(src) == before  # the source is never changed
    coco = CocoConcepts(tmp_path / "ds")
    assert coco.vocabulary == ["cat", "dog"] and coco.thing_concepts == ["cat", "dog"]
    assert sorted(coco.image_info(i)["file_name"] for i in coco.image_ids) == ["a.jpg", "b.png", "c.png"]
    a = masks_by_category(coco, "a.jpg")
    assert iou(a["cat"][0], box_mask(5, 5, 25, 20)) > 0.85
    assert iou(a["dog"][0], box_mask(35, 20, 60, 44)) > 0.85
    yy, xx = np.mgrid[:H, :W]
    disc = (yy + 0.5 - 20) ** 2 + (xx + 0.5 - 20) ** 2 < 100
    assert iou(masks_by_category(coco, "b.png")["cat"][0], disc) > 0.9
    assert masks_by_category(coco, "c.png") == {}
    data = json.loads((tmp_path / "ds" / "annotations.json").read_text())
    ann = data["annotations"][0]
    assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
    assert ann["bbox"] == pytest.approx([5, 5, 20, 15], abs=1.01) and ann["area"] == a["cat"][0].sum()
    assert (tmp_path / "ds" / "images" / "a.jpg").read_bytes() == (src / "a.jpg").read_bytes()
    assert (tmp_path / "ds").stat().st_mode & 0o777 == (tmp_path / "src").stat().st_mode & 0o777  # not 0700


def test_via_fixed_category_and_link(tmp_path):
    src = write_via(tmp_path / "src")
    summary = convert_via(src / "via_region_data.json", tmp_path / "ds", category="thing", link=True)
    assert summary["per_category"] == {"thing": 3} and summary["photos"] == 3
    assert (tmp_path / "ds" / "images" / "b.png").stat().st_ino == (src / "b.png").stat().st_ino


@pytest.mark.parametrize("mutate, message", [
    (lambda root: (root / "via_region_data.json").write_text("{not json"), "not valid JSON"),
    (lambda root: (root / "b.png").unlink(), "photo not found"),
    (lambda root: write_via(root, {"0": {"shape_attributes": {"name": "polygon", "all_points_x": [1, 9],
                                                              "all_points_y": [1, 9]}}}), "2 point(s)"),
    (lambda root: write_via(root, {"0": {"shape_attributes": {"name": "polygon", "all_points_x": [1, 9, "9"],
                                                              "all_points_y": [1, 1, 9]}}}), "x is missing or not a"),
    (lambda root: write_via(root, {"0": {"shape_attributes": {"name": "point", "cx": 1, "cy": 1}}}), "no area"),
    (lambda root: write_via(root, {"0": via_region(5, 5, 25, 20)}), "'kind' is missing"),
    (lambda root: write_via(root, {"0": via_region(200, 200, 220, 220, "cat")}), "covers no pixel"),
])
def test_via_malformed(tmp_path, capsys, mutate, message):
    src = write_via(tmp_path / "src")
    mutate(src)
    rc, _, err = run_cli(["via", str(src), "--category-attribute", "kind", "--out", str(tmp_path / "ds")], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert err.startswith(f"sam-lite convert: error: {src / 'via_region_data.json'}: ")
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no temporary folder left behind


def test_via_exif_rotated_photo_is_stored_pixels_upright(tmp_path):
    src = write_via(tmp_path / "src")
    photo(src / "a.jpg", [(5, 5, 25, 20), (35, 20, 60, 44)], exif_orientation=6)
    summary = convert_via(src, tmp_path / "ds", category_attribute="kind")
    assert summary["reencoded"] == 1
    with Image.open(tmp_path / "ds" / "images" / "a.jpg") as im:
        assert im.size == (W, H) and im.getexif().get(0x0112, 1) == 1  # VIA's frame: the stored pixels, no tag


def test_existing_output_kept_unless_overwrite(tmp_path, capsys):
    src = write_via(tmp_path / "src")
    out = tmp_path / "ds"
    convert_via(src, out, category="x")
    stamp = (out / "annotations.json").read_text()
    rc, _, err = run_cli(["via", str(src), "--category", "y", "--out", str(out)], capsys)
    assert rc == 2 and "already exists" in err and (out / "annotations.json").read_text() == stamp
    rc, _, err = run_cli(["via", str(src), "--category", "y", "--out", str(out), "--overwrite"], capsys)
    assert rc == 0 and '"name": "y"' in (out / "annotations.json").read_text()
    (out / "notes.txt").write_text("mine")  # not only a dataset: never deleted
    with pytest.raises(ConvertError, match="holds more than a dataset"):
        convert_via(src, out, category="z", overwrite=True)
    with pytest.raises(ConvertError, match="would contain the input"):
        convert_via(src, tmp_path, category="z", overwrite=True)
    assert (out / "notes.txt").exists() and (src / "via_region_data.json").exists()


# --- labelme ------------------------------------------------------------------------------------------------------
def labelme_file(root: Path, name: str, shapes: list[dict], image_path: str, embed: bytes | None = None,
                 size=(H, W)) -> None:
    data = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path,
            "imageData": base64.b64encode(embed).decode() if embed else None,
            "imageHeight": size[0], "imageWidth": size[1]}
    (root / name).write_text(json.dumps(data))


def shape(label, points, kind="polygon", group=None, **extra):
    return {"label": label, "points": points, "group_id": group, "shape_type": kind, "flags": {}, **extra}


def write_labelme(root: Path) -> Path:
    photo(root / "one.jpg", [(4, 4, 20, 16), (24, 4, 40, 16), (44, 30, 60, 46)])
    labelme_file(root, "one.json", [
        shape("person", [[4, 4], [20, 4], [20, 16], [4, 16]], group=1),  # two parts of one (occluded) person
        shape("person", [[24, 4], [40, 16]], "rectangle", group=1),
        shape("ball", [[52, 38], [60, 38]], "circle"),
    ], "one.jpg")
    buf = io.BytesIO()
    Image.open(photo(root / "tmp.png", [(8, 8, 24, 40)])).save(buf, format="PNG")
    (root / "tmp.png").unlink()
    crop = Image.fromarray(np.ones((8, 8), np.uint8) * 255)
    mbuf = io.BytesIO()
    crop.save(mbuf, format="PNG")
    labelme_file(root, "two.json", [  # the photo only embedded (imageData)
        shape("person", [[8, 8], [24, 8], [24, 40], [8, 40]]),
        shape("ball", [[40, 20], [47, 27]], "mask", mask=base64.b64encode(mbuf.getvalue()).decode()),
    ], "two.png", embed=buf.getvalue())
    return root


def test_labelme_groups_rectangles_circles_masks_and_embedded_photo(tmp_path, capsys):
    src = write_labelme(tmp_path / "lm")
    rc, out, err = run_cli(["labelme", str(src), "--out", str(tmp_path / "ds")], capsys)
    assert rc == 0, err
    assert "2 photos, 4 annotations, 2 categories (ball 2, person 2)" in out
    coco = CocoConcepts(tmp_path / "ds")
    one = masks_by_category(coco, "one.jpg")
    assert len(one["person"]) == 1  # group_id merged the polygon and the rectangle
    assert iou(one["person"][0], box_mask(4, 4, 20, 16) | box_mask(24, 4, 40, 16)) > 0.85
    yy, xx = np.mgrid[:H, :W]
    assert iou(one["ball"][0], (yy + 0.5 - 38) ** 2 + (xx + 0.5 - 52) ** 2 < 64) > 0.85
    two = masks_by_category(coco, "two.png")
    assert iou(two["person"][0], box_mask(8, 8, 24, 40)) > 0.85
    assert np.array_equal(two["ball"][0], box_mask(40, 20, 48, 28))
    assert (tmp_path / "ds" / "images" / "two.png").is_file() and not (src / "two.png").exists()


def test_labelme_class_list_exif_and_foreign_image_path(tmp_path):
    src = write_labelme(tmp_path / "lm")
    data = json.loads((src / "one.json").read_text())
    (src / "one.json").write_text(json.dumps({**data, "imagePath": "C:\\Users\\me\\photos\\one.jpg"}))
    photo(src / "one.jpg", [(4, 4, 20, 16)], size=(W, H), exif_orientation=6)  # stored 48 wide, shown 64 wide
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\nperson\nball\ntree\n")
    summary = convert_labelme(src, tmp_path / "ds", classes=tmp_path / "labels.txt")
    assert summary["reencoded"] == 1
    cats = json.loads((tmp_path / "ds" / "annotations.json").read_text())["categories"]
    assert [(c["id"], c["name"]) for c in cats] == [(1, "person"), (2, "ball"), (3, "tree")]
    with Image.open(tmp_path / "ds" / "images" / "one.jpg") as im:
        assert im.size == (W, H)  # turned as labelme shows it, where its points are


@pytest.mark.parametrize("mutate, file, message", [
    (lambda root: (root / "one.json").write_text('{"shapes": ['), "one.json", "not valid JSON"),
    (lambda root: (root / "one.jpg").unlink(), "one.json", "photo not found"),
    (lambda root: labelme_file(root, "one.json", [shape("cat", [[1, 1], [9, 9]])], "one.jpg"), "one.json",
     "shape 0 ('cat'): 2 point(s), at least 3 needed"),
    (lambda root: labelme_file(root, "one.json", [shape("cat", [[1, 1], [9, 9]], "line")], "one.jpg"),
     "one.json", "no area"),
    (lambda root: labelme_file(root, "one.json", [shape("", [[1, 1], [9, 1], [9, 9]])], "one.jpg"), "one.json",
     "label is missing"),
    (lambda root: labelme_file(root, "one.json", [], "one.jpg", size=(10, 10)), "one.json", "photo is 64x48"),
    (lambda root: labelme_file(root, "two.json", [], "gone.png", embed=b"not a picture"), "two.json",
     "imageData: cannot read the photo"),
])
def test_labelme_malformed(tmp_path, capsys, mutate, file, message):
    src = write_labelme(tmp_path / "lm")
    mutate(src)
    rc, _, err = run_cli(["labelme", str(src), "--out", str(tmp_path / "ds")], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert str(src / file) in err and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm"]


def test_labelme_label_outside_class_list(tmp_path):
    src = write_labelme(tmp_path / "lm")
    (tmp_path / "labels.txt").write_text("person\n")
    with pytest.raises(ConvertError, match=r"one\.json: shape 2 \('ball'\): label not in the class list"):
        convert_labelme(src, tmp_path / "ds", classes=tmp_path / "labels.txt")
    assert not (tmp_path / "ds").exists()


# --- index PNG ----------------------------------------------------------------------------------------------------
def write_index_png(root: Path) -> Path:
    photo(root / "images" / "p1.jpg", [(2, 2, 12, 12), (30, 2, 40, 12), (20, 30, 50, 44)])
    photo(root / "images" / "p2.jpg")
    m1 = np.zeros((H, W), np.uint8)
    m1[2:12, 2:12] = 1  # cat, two separate blobs
    m1[2:12, 30:40] = 1
    m1[30:44, 20:50] = 2  # dog
    m1[40:44, 0:8] = 255  # ignore
    (root / "masks").mkdir(parents=True)
    im = Image.fromarray(m1, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (253 * 3))
    im.save(root / "masks" / "p1.png")
    Image.fromarray(np.zeros((H, W), np.uint8), mode="L").save(root / "masks" / "p2.png")
    (root / "classes.txt").write_text("background\ncat\ndog\nbird\n")
    return root


def index_args(root: Path, out: Path, *extra) -> list[str]:
    return ["index-png", "--images", str(root / "images"), "--masks", str(root / "masks"),
            "--classes", str(root / "classes.txt"), "--out", str(out), *extra]


def test_index_png_components(tmp_path, capsys):
    root = write_index_png(tmp_path / "src")
    rc, out, err = run_cli(index_args(root, tmp_path / "ds"), capsys)
    assert rc == 0, err
    assert "2 photos, 3 annotations, 3 categories (cat 2, dog 1, bird 0)" in out
    coco = CocoConcepts(tmp_path / "ds")
    assert coco.thing_concepts == ["bird", "cat", "dog"]
    p1 = masks_by_category(coco, "p1.jpg")
    cats = sorted(p1["cat"], key=lambda m: np.argwhere(m)[0][1])
    assert np.array_equal(cats[0], box_mask(2, 2, 12, 12)) and np.array_equal(cats[1], box_mask(30, 2, 40, 12))
    assert np.array_equal(p1["dog"][0], box_mask(20, 30, 50, 44))
    assert masks_by_category(coco, "p2.jpg") == {}


def test_index_png_one_region_per_class_is_stuff(tmp_path):
    root = write_index_png(tmp_path / "src")
    summary = convert_index_png(root / "images", root / "masks", root / "classes.txt", tmp_path / "ds",
                                instances="class")
    assert summary["per_category"] == {"cat": 1, "dog": 1, "bird": 0}
    coco = CocoConcepts(tmp_path / "ds")
    assert coco.stuff_concepts == ["bird", "cat", "dog"] and coco.thing_concepts == []
    assert all(coco.stuff_labelled[i] for i in coco.image_ids)  # absent classes are known negatives
    p1 = masks_by_category(coco, "p1.jpg")
    assert np.array_equal(p1["cat"][0], box_mask(2, 2, 12, 12) | box_mask(30, 2, 40, 12))
    p2 = next(i for i in coco.image_ids if coco.image_info(i)["file_name"] == "p2.jpg")
    assert set(coco.negative_pool(p2, set())) == {"cat", "dog", "bird"}


def test_index_png_background_none_min_area(tmp_path, capsys):
    root = write_index_png(tmp_path / "src")
    rc, out, err = run_cli(index_args(root, tmp_path / "ds", "--background", "none", "--min-area", "120"), capsys)
    assert rc == 0, err
    assert "(background 2, cat 0, dog 1, bird 0)" in out  # the 100 px cats are under --min-area


def test_via2_project_file_and_via3_refused(tmp_path):
    src = write_via(tmp_path / "src")
    entries = json.loads((src / "via_region_data.json").read_text())
    (src / "project.json").write_text(json.dumps({"_via_settings": {}, "_via_img_metadata": entries}))
    assert convert_via(src / "project.json", tmp_path / "ds", category_attribute="kind")["annotations"] == 3
    (src / "v3.json").write_text(json.dumps({"project": {}, "config": {}, "file": {}, "metadata": {}, "view": {}}))
    with pytest.raises(ConvertError, match="v3.json: a VIA 3 project"):
        convert_via(src / "v3.json", tmp_path / "ds3", category="x")


def _rgb_mask(root):
    Image.new("RGB", (W, H)).save(root / "masks" / "p2.png")


def _unknown_index(root):
    m = np.zeros((H, W), np.uint8)
    m[5, 7] = 9
    Image.fromarray(m, mode="L").save(root / "masks" / "p2.png")


@pytest.mark.parametrize("mutate, file, message", [
    (lambda root: (root / "masks" / "p2.png").unlink(), "p2.jpg", "no mask"),
    (_rgb_mask, "p2.png", "mode RGB is not an index mask"),
    (_unknown_index, "p2.png", "pixel (7, 5): class index 9 is not in classes.txt"),
    (lambda root: Image.new("L", (10, 10)).save(root / "masks" / "p2.png"), "p2.png", "differs from the photo"),
    (lambda root: (root / "masks" / "p2.png").write_bytes(b"\x89PNG broken"), "p2.png", "cannot read"),
    (lambda root: (root / "classes.txt").write_text("background\ncat\ncat\n"), "classes.txt", "duplicate"),
])
def test_index_png_malformed(tmp_path, capsys, mutate, file, message):
    root = write_index_png(tmp_path / "src")
    mutate(root)
    rc, _, err = run_cli(index_args(root, tmp_path / "ds"), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert file in err and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# --- real data ----------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not (BALLOON / "val" / "via_region_data.json").is_file(), reason="no ../shared/data/balloon")
def test_balloon_val(tmp_path, capsys):
    rc, out, err = run_cli(["via", str(BALLOON / "val"), "--category", "balloon", "--out", str(tmp_path / "ds")],
                           capsys)
    assert rc == 0, err
    assert "13 photos, 50 annotations, 1 category (balloon 50)" in out
    coco = CocoConcepts(tmp_path / "ds")
    assert len(coco.image_ids) == 13 and len(coco.coco.anns) == 50 and coco.vocabulary == ["balloon"]
    assert not any(coco.skipped.values())
    per_photo = sorted(len(coco.image_annotations(i)) for i in coco.image_ids)
    assert (per_photo[0], per_photo[len(per_photo) // 2], per_photo[-1]) == (1, 3, 9)  # README: 1 / 3 / 9
    for i in coco.image_ids:
        info = coco.image_info(i)
        with Image.open(coco.image_path(i)) as im:
            assert im.size == (info["width"], info["height"])
        for a in coco.image_annotations(i):
            m = coco.ann_mask(a)
            assert a["area"] == m.sum() > 0
            x, y, w, h = a["bbox"]
            assert 0 <= x < x + w <= info["width"] and 0 <= y < y + h <= info["height"]

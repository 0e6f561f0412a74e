"""`python -m imgclf review`: the page's service on a real 127.0.0.1 port (decisions written at
once, undo, groups; hostile requests change nothing and read no file), suspects.csv checked row
by row, the command line, and the page itself in real headless Chromium through Selenium, last
on a real repository whose next `dvc repro` applies what was decided on the page.

The repositories are made here from the shipped sample photos: data/clean/<class>/<id>.jpg.jpg
and a data/audit/suspects.csv as the audit stage writes it (rows most suspicious first).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import http.client
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import requests
import uvicorn
from PIL import Image

from imgclf.core.classes import classes_from_names, write_class_list
from imgclf.core.files import read_csv
from imgclf.core.paths import SPLIT_FILES, SUSPECTS
from imgclf.curation.decisions import Decision, content_id, write_decisions
from imgclf.curation.suspects import COLUMNS, SuspectsError
from imgclf.review import app as review
from imgclf.review.suspects import read_suspects

from helpers.dvcrepo import environment, sh, stages_run, tiny_repository
from helpers.paths import REPO_ROOT
from helpers.webfake import free_port

SAMPLE = REPO_ROOT / "data" / "sample" / "flowers"
CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
TOKEN = "test-token-0123456789"
CURATION = Path("data/curation.csv")
SCREENSHOT = REPO_ROOT / "docs" / "review.png"
SCREENSHOT_SIZE = (1000, 700)
# Set to 1 to rewrite docs/review.png (the README's picture of the page) from this suite's run.
WRITE_SCREENSHOT = os.environ.get("IMGCLF_WRITE_SCREENSHOT") == "1"


# ---- Repositories made from the sample ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    photo: Path      # a sample photo, copied into data/clean/<filed>/
    filed: str
    suggested: str
    issue: str
    score: float
    cluster: str = ""


def photo(name: str, index: int) -> Path:
    return sorted((SAMPLE / name).glob("*.jpg"))[index]


def image_id(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:20]


def build_repo(root: Path, rows: list[Row]) -> list[dict[str, str]]:
    """data/clean (the class list and the pictures) and data/audit/suspects.csv, most suspicious
    first; the suspects' rows."""
    write_class_list(root / "data/clean/classes.csv", classes_from_names(CLASSES))
    suspects = []
    for row in sorted(rows, key=lambda row: -row.score):
        image = image_id(row.photo)
        file = f"{row.filed}/{image}.jpg.jpg"
        (root / "data/clean" / row.filed).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row.photo, root / "data/clean" / file)
        suspects.append({"file": file, "image": image, "class": row.filed,
                         "suggested": row.suggested, "issue": row.issue,
                         "score": f"{row.score:.3f}", "cluster": row.cluster})
    write_suspects(root / "data/audit/suspects.csv", suspects)
    return suspects


def write_suspects(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


# The top suspect (a rose filed as a daisy), a group of two tulips among the daisies, a sunflower
# among the dandelions, a daisy the audit doubts, and pictures it finds in place.
ROWS = [
    Row(photo("roses", 0), "daisy", "roses", "mislabeled", 0.97),
    Row(photo("tulips", 0), "daisy", "tulips", "off-topic", 0.91, "g1"),
    Row(photo("tulips", 1), "daisy", "tulips", "off-topic", 0.88, "g1"),
    Row(photo("sunflowers", 0), "dandelion", "sunflowers", "mislabeled", 0.80),
    Row(photo("daisy", 0), "daisy", "roses", "mislabeled", 0.60),
    *(Row(photo(name, 2), name, "", "ok", 0.1) for name in CLASSES),
]


@pytest.fixture
def suspects(in_tmp_repo: Path) -> list[dict[str, str]]:
    return build_repo(in_tmp_repo, ROWS)


@dataclasses.dataclass(frozen=True)
class Served:
    url: str
    port: int

    def decide(self, *changes: dict, token: str = TOKEN, **headers: str) -> requests.Response:
        return requests.post(f"{self.url}/api/decisions", json={"changes": list(changes)},
                             headers={"X-Review-Token": token, **headers}, timeout=30)

    def undo(self) -> requests.Response:
        return requests.post(f"{self.url}/api/undo", headers={"X-Review-Token": TOKEN},
                             timeout=30)

    def raw_get(self, path: str, host: str | None = None) -> tuple[int, bytes]:
        """GET `path` exactly as written (no client tidies `..` or escapes away)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest("GET", path, skip_host=True)
            connection.putheader("Host", host or f"127.0.0.1:{self.port}")
            connection.endheaders()
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@contextlib.contextmanager
def serving(token: str = TOKEN) -> Iterator[Served]:
    """The application on a real 127.0.0.1 port, in a thread of this process: its socket is bound
    before the application is made, as the Host check needs the port."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        app = review.create_app(review.open_session(), token,
                                review.allowed_hosts("127.0.0.1", port))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        try:
            _wait(lambda: server.started or not thread.is_alive(), "the server did not start")
            assert thread.is_alive(), "the server stopped at start"
            yield Served(f"http://127.0.0.1:{port}", port)
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def _wait(condition, failure: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.02)


@pytest.fixture
def served(suspects) -> Iterator[Served]:
    with serving() as server:
        yield server


def decisions_file() -> list[dict[str, str]]:
    return read_csv(CURATION) if CURATION.is_file() else []


# ---- The service ---------------------------------------------------------------------------------


def test_state_lists_classes_and_suspects_most_suspicious_first(served, suspects) -> None:
    state = requests.get(f"{served.url}/api/state", timeout=30).json()
    assert state["classes"] == CLASSES
    assert [s["image"] for s in state["suspects"]] == [row["image"] for row in suspects]
    top = state["suspects"][0]
    assert (top["class"], top["suggested"], top["issue"], top["score"], top["cluster"]) == (
        "daisy", "roses", "mislabeled", 0.97, "")
    assert [s["cluster"] for s in state["suspects"][1:3]] == ["g1", "g1"]
    assert (state["decisions"], state["total"], state["can_undo"]) == ({}, 0, False)
    page = requests.get(served.url, timeout=30)
    assert f'<meta name="review-token" content="{TOKEN}">' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_each_decision_is_written_at_once_and_undone_in_turn(served, suspects) -> None:
    top, group_a, group_b, sunflower = (row["image"] for row in suspects[:4])
    assert served.decide({"image": top, "decision": "reject"}).status_code == 200
    assert decisions_file() == [{"image": top, "decision": "reject", "class": "", "note": ""}]
    answer = served.decide({"image": sunflower, "decision": "relabel", "class": "sunflowers"})
    assert answer.json()["decisions"][sunflower] == {"decision": "relabel", "class": "sunflowers",
                                                     "note": ""}
    # A group goes in one batch, one row per picture.
    served.decide(*({"image": image, "decision": "reject", "note": "group g1"}
                    for image in (group_a, group_b)))
    rows = {row["image"]: row for row in decisions_file()}
    assert set(rows) == {top, sunflower, group_a, group_b}
    assert rows[group_b] == {"image": group_b, "decision": "reject", "class": "",
                             "note": "group g1"}
    served.decide({"image": top, "decision": None})  # cleared
    assert top not in {row["image"] for row in decisions_file()}
    # Undo takes back one batch at a time, the last first.
    assert served.undo().json()["decisions"][top]["decision"] == "reject"
    served.undo()
    assert {row["image"] for row in decisions_file()} == {top, sunflower}
    served.undo()
    served.undo()
    answer = served.undo()
    assert decisions_file() == [] and answer.status_code == 409
    assert "nothing to undo" in answer.json()["detail"]


def test_a_decision_made_meanwhile_in_the_file_is_kept(served, suspects) -> None:
    by_hand = Decision(suspects[4]["image"], "keep", note="checked by hand")
    write_decisions({by_hand.image: by_hand}, CURATION)
    served.decide({"image": suspects[0]["image"], "decision": "keep"})
    assert {row["image"]: row["note"] for row in decisions_file()} == {
        by_hand.image: "checked by hand", suspects[0]["image"]: ""}
    assert requests.get(f"{served.url}/api/state", timeout=30).json()["total"] == 2


@pytest.mark.parametrize("change, status, reason", [
    ({"decision": "relabel", "class": "orchids"}, 422, "class: the class to move the picture to"),
    ({"decision": "relabel", "class": "daisy"}, 422, "the class it is filed in"),
    ({"decision": "delete"}, 422, "decision"),
    ({"decision": "keep", "note": "two\nlines"}, 422, "one line of text"),
    ({"decision": "keep", "image": "0" * 20}, 404, "no picture of data/audit/suspects.csv"),
    ({"decision": "keep", "image": "../../etc/passwd"}, 404, "no picture"),
])
def test_a_change_that_cannot_be_made_is_refused_and_writes_nothing(
        served, suspects, change, status, reason) -> None:
    good = {"image": suspects[1]["image"], "decision": "reject"}
    response = served.decide(good, {"image": suspects[0]["image"], **change})
    assert response.status_code == status, response.text
    assert reason in str(response.json()["detail"])
    assert not CURATION.exists()  # not even the good change of the same batch


def test_hostile_requests_change_nothing(served, suspects) -> None:
    change = {"image": suspects[0]["image"], "decision": "reject"}
    refusals = [
        (served.decide(change, Host=f"attacker.example:{served.port}"), 421),  # DNS rebinding
        (served.decide(change, Host=f"127.0.0.1:{served.port + 1}"), 421),
        (served.decide(change, token=""), 403),
        (served.decide(change, token=TOKEN + "x"), 403),
        (served.decide(change, Origin="http://attacker.example"), 403),
        (served.decide(change, Origin="null"), 403),
        (requests.post(f"{served.url}/api/decisions", data=b"x" * (review.MAX_BODY_BYTES + 1),
                       headers={"X-Review-Token": TOKEN}, timeout=30), 413),
        (requests.post(f"{served.url}/api/undo", timeout=30), 403),
    ]
    assert [response.status_code for response, _ in refusals] == [s for _, s in refusals]
    assert not CURATION.exists()
    # A rebound page cannot read the page, its token, the state or a picture either.
    for path in ("/", "/api/state", f"/images/{suspects[0]['image']}"):
        status, body = served.raw_get(path, host=f"attacker.example:{served.port}")
        assert status == 421 and TOKEN.encode() not in body
    # The page's own origin with the token works.
    response = served.decide(change, Origin=served.url)
    assert response.status_code == 200 and len(decisions_file()) == 1


def test_pictures_are_served_only_by_content_id(served, suspects, in_tmp_repo: Path) -> None:
    first = suspects[0]
    status, body = served.raw_get(f"/images/{first['image']}")
    assert status == 200 and body == (in_tmp_repo / "data/clean" / first["file"]).read_bytes()
    # A picture in data/clean that suspects.csv does not name is not served either.
    stray = in_tmp_repo / "data/clean/daisy" / f"{'a' * 20}.jpg.jpg"
    shutil.copyfile(photo("daisy", 5), stray)
    (in_tmp_repo / "secret.txt").write_text("not for the page")
    for path in (f"/images/{'a' * 20}", "/images/..%2F..%2Fsecret.txt",
                 "/images/%2e%2e/%2e%2e/secret.txt", "/images/../../secret.txt",
                 f"/images/{first['file']}", f"/images/{first['image']}%00.jpg",
                 "/assets/..%2Fapp.py", "/assets/../session.py", "/assets/index.html",
                 f"/data/clean/{first['file']}", "/secret.txt", "/etc/passwd"):
        status, body = served.raw_get(path)
        assert status == 404, (path, status)
        assert b"not for the page" not in body and not body.startswith(b"\xff\xd8")
    # A picture removed since the audit ran: 404 with what to run.
    (in_tmp_repo / "data/clean" / first["file"]).unlink()
    status, body = served.raw_get(f"/images/{first['image']}")
    assert status == 404 and b"dvc repro clean" in body


# ---- suspects.csv --------------------------------------------------------------------------------


@pytest.mark.parametrize("column, value, message", [
    ("file", "../../secret/0123456789abcdef0123.jpg.jpg", "file: <class>/<content id>"),
    ("file", "/etc/0123456789abcdef0123.jpg.jpg", "file: <class>/<content id>"),
    ("file", "daisy/sub/0123456789abcdef0123.jpg.jpg", "file: <class>/<content id>"),
    ("file", "roses/0123456789abcdef0123.jpg.jpg", "file: <class>/<content id>"),
    ("file", "daisy/ffffffffffffffffffff.jpg.jpg", "file: <class>/<content id>"),
    ("image", "0123", "image: a content id"),
    ("class", "orchids", "class: 'orchids' is not in data/clean/classes.csv"),
    ("suggested", "orchids", "suggested: 'orchids' is not in"),
    ("issue", "blurry", "issue: one of off-topic, mislabeled, ok"),
    ("score", "nan", "score: a finite number"),
    ("score", "high", "score: a finite number"),
])
def test_a_row_of_suspects_csv_that_cannot_be_used_is_named(
        tmp_path: Path, column, value, message) -> None:
    row = {"file": "daisy/0123456789abcdef0123.jpg.jpg", "image": "0123456789abcdef0123",
           "class": "daisy", "suggested": "roses", "issue": "mislabeled", "score": "0.5",
           "cluster": ""}
    path = tmp_path / "suspects.csv"
    write_suspects(path, [{**row, "file": row["file"].replace("0123", "4567", 1),
                           "image": "4567456789abcdef0123"}, {**row, column: value}])
    with pytest.raises(SuspectsError, match=f"{path}:3: {_escaped(message)}"):
        read_suspects(path, CLASSES)


def _escaped(text: str) -> str:
    return "".join(f"\\{char}" if char in ".()[]*+?<>" else char for char in text)


def test_suspects_csv_missing_repeated_or_without_columns(tmp_path: Path) -> None:
    path = tmp_path / "suspects.csv"
    with pytest.raises(SuspectsError, match="not found: run `dvc repro audit` first"):
        read_suspects(path, CLASSES)
    path.write_text("file,image,class\ndaisy/x,x,daisy\n")
    with pytest.raises(SuspectsError, match="needs columns file, image, class, suggested"):
        read_suspects(path, CLASSES)
    row = {"file": "daisy/0123456789abcdef0123.jpg.jpg", "image": "0123456789abcdef0123",
           "class": "daisy", "suggested": "", "issue": "ok", "score": "0", "cluster": ""}
    write_suspects(path, [row, row])
    with pytest.raises(SuspectsError, match=":3: image 0123456789abcdef0123 appears twice"):
        read_suspects(path, CLASSES)


# ---- The command line ----------------------------------------------------------------------------


def _command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgclf", "review", *args], cwd=cwd,
                          env=environment(), capture_output=True, text=True, timeout=120)


def test_command_refuses_other_hosts_and_a_repository_without_suspects(tmp_path: Path) -> None:
    refused = _command("--host", "0.0.0.0", cwd=tmp_path)
    assert refused.returncode == 2
    assert "--host 0.0.0.0: only a loopback address" in refused.stderr
    assert "ssh -L 8001:127.0.0.1:8001" in refused.stderr
    write_class_list(tmp_path / "data/clean/classes.csv", classes_from_names(CLASSES))
    missing = _command(cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("imgclf review: error: data/audit/suspects.csv not "
                                      "found: run `dvc repro audit` first, which ranks the "
                                      "cleaned pictures")
    assert _command("--port", "0", cwd=tmp_path).returncode == 2


def test_command_serves_the_page_on_the_loopback_address_only(suspects, in_tmp_repo) -> None:
    port = free_port()
    log = in_tmp_repo / "review.log"  # a file, not a pipe that nobody reads and that could fill
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "imgclf", "review", "--port", str(port)],
                                   cwd=in_tmp_repo, env=environment(), stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        _wait(lambda: process.poll() is not None or _answers(port), "the page did not start", 120)
        assert process.poll() is None, log.read_text()
        page = requests.get(f"http://localhost:{port}/", timeout=30)
        assert page.status_code == 200 and 'name="review-token"' in page.text
        listening = {c.laddr.ip for c in psutil.Process(process.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        assert f"open http://127.0.0.1:{port}/" in log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/api/state", timeout=2)
    except requests.ConnectionError:
        return False
    return True


# ---- The page in Chromium ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from imgclf.sources.browser import CHROMEDRIVER, CHROMIUM, FLAGS, LOCAL_ONLY_FLAG

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, LOCAL_ONLY_FLAG):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _until(driver, condition, failure: str):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page draws its grid anew after each change: an element found a moment ago may be gone.
    return WebDriverWait(driver, 60, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)
                         ).until(condition, failure)


def _card(driver, image: str):
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f'.card[data-image="{image}"]')
    return found[0] if found else None


def _card_is(driver, image: str, css_class: str, present: bool = True):
    def check(_) -> bool:
        card = _card(driver, image)
        return card is not None and (css_class in card.get_attribute("class").split()) == present
    return check


def _keys(driver, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()


def test_review_in_chromium_by_keyboard_and_mouse(chromium, served, suspects) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = chromium
    driver.set_window_size(1280, 900)
    top, group_a, group_b, sunflower, doubted = (row["image"] for row in suspects[:5])
    driver.get(served.url)
    _until(driver, _card_is(driver, top, "focused"), "the top suspect is not shown first")
    # The classes with their suspect counts; the page opens on the top suspect's class.
    counts = {button.get_attribute("data-class"): button.find_element(By.CLASS_NAME, "count").text
              for button in driver.find_elements(By.CSS_SELECTOR, "#classes button")}
    assert counts == {"daisy": "4", "dandelion": "1", "roses": "0", "sunflowers": "0",
                      "tulips": "0"}
    shown = [card.get_attribute("data-image")
             for card in driver.find_elements(By.CSS_SELECTOR, "#grid .card")]
    assert shown == [top, group_a, group_b, doubted]  # suspects only, most suspicious first
    group = driver.find_element(By.CSS_SELECTOR, '.group[data-cluster="g1"]')
    assert {c.get_attribute("data-image") for c in group.find_elements(By.CLASS_NAME, "card")} \
        == {group_a, group_b}
    assert "dvc repro" in driver.find_element(By.ID, "status").text

    _keys(driver, "r")  # reject the top suspect by keyboard
    _until(driver, _card_is(driver, top, "reject"), "r did not reject the top suspect")
    _until(driver, _card_is(driver, group_a, "focused"), "the next picture is not focused")
    _keys(driver, Keys.ARROW_RIGHT + Keys.ARROW_RIGHT + "m")  # relabel by keyboard
    field = driver.find_element(By.ID, "move-filter")
    _until(driver, lambda _: field.is_displayed(), "m did not open the class chooser")
    field.send_keys("tul", Keys.ENTER)
    _until(driver, _card_is(driver, doubted, "relabel"), "the chooser did not move the picture")

    # A group at once, by mouse (the grid is drawn anew after each change: find it again).
    driver.find_element(By.CSS_SELECTOR, '.group[data-cluster="g1"] .reject-group').click()
    _until(driver, _card_is(driver, group_b, "reject"), "the group was not rejected")
    _keys(driver, "u")
    _until(driver, _card_is(driver, group_b, "reject", present=False), "u did not undo")

    driver.find_element(By.CSS_SELECTOR, '#classes button[data-class="dandelion"]').click()
    _until(driver, _card_is(driver, sunflower, "focused"), "the class did not open")
    _card(driver, sunflower).find_element(By.CSS_SELECTOR, '[data-action="suggested"]').click()
    _until(driver, _card_is(driver, sunflower, "relabel"), "→ sunflowers did not move it")

    expected = {top: ("reject", ""), doubted: ("relabel", "tulips"),
                sunflower: ("relabel", "sunflowers")}
    assert {row["image"]: (row["decision"], row["class"]) for row in decisions_file()} == expected

    driver.refresh()  # what is decided is read back from the file
    _until(driver, _card_is(driver, top, "reject"), "the rejection is not shown after a reload")
    driver.find_element(By.CSS_SELECTOR, '#filters [data-filter="decided"]').click()
    _until(driver, lambda _: _card(driver, group_a) is None, "the decided filter shows others")
    verdicts = {card.get_attribute("data-image"): card.find_element(By.CLASS_NAME, "verdict").text
                for card in driver.find_elements(By.CSS_SELECTOR, "#grid .card")}
    assert verdicts == {top: "rejected", doubted: "moved to tulips"}
    in_place = suspects[5]
    assert (in_place["class"], in_place["issue"]) == ("daisy", "ok")
    _keys(driver, "2")  # all: the pictures the audit finds in place as well
    _until(driver, lambda _: _card(driver, in_place["image"]) is not None, "all shows too few")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#grid .card")) == 5
    assert driver.find_element(By.ID, "message").is_displayed() is False


def test_screenshot_of_the_sample_for_the_readme(chromium, in_tmp_repo: Path) -> None:
    """The page on pictures of the shipped sample, decided in part. IMGCLF_WRITE_SCREENSHOT=1
    writes it to docs/review.png (kept under 150 kB: fewer colours, which photos survive)."""
    rows = [Row(photo("roses", 2), "daisy", "roses", "mislabeled", 0.96),
            Row(photo("tulips", 2), "daisy", "tulips", "off-topic", 0.90, "g7"),
            Row(photo("tulips", 3), "daisy", "tulips", "off-topic", 0.87, "g7"),
            Row(photo("tulips", 4), "daisy", "tulips", "off-topic", 0.85, "g7"),
            Row(photo("dandelion", 2), "daisy", "dandelion", "mislabeled", 0.71),
            Row(photo("daisy", 3), "daisy", "sunflowers", "mislabeled", 0.52),
            Row(photo("daisy", 4), "daisy", "roses", "mislabeled", 0.44),
            *(Row(photo(name, index), name, "", "ok", 0.05) for name in CLASSES
              for index in (5, 6)),
            Row(photo("sunflowers", 7), "dandelion", "sunflowers", "mislabeled", 0.66)]
    suspects = build_repo(in_tmp_repo, rows)
    write_decisions({suspects[0]["image"]: Decision(suspects[0]["image"], "reject"),
                     suspects[4]["image"]: Decision(suspects[4]["image"], "relabel",
                                                    "dandelion")}, CURATION)
    with serving() as server:
        chromium.get(server.url)
        _viewport(chromium, SCREENSHOT_SIZE)
        _until(chromium, _card_is(chromium, suspects[0]["image"], "focused"), "no page")
        _until(chromium, lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"),
            "the pictures did not load")
        png = chromium.get_screenshot_as_png()
    small = _small_png(png)
    assert Image.open(io.BytesIO(small)).size == SCREENSHOT_SIZE
    if WRITE_SCREENSHOT:
        assert len(small) < 150_000, f"{len(small)} bytes"
        SCREENSHOT.write_bytes(small)


def _viewport(driver, size: tuple[int, int]) -> None:
    """Size the window so that the page itself (without the window's frame) is `size`."""
    driver.set_window_size(*size)
    width, height = driver.execute_script("return [window.outerWidth - window.innerWidth,"
                                          " window.outerHeight - window.innerHeight];")
    driver.set_window_size(size[0] + width, size[1] + height)


def _small_png(png: bytes) -> bytes:
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.slow
def test_decisions_made_on_the_page_are_applied_by_dvc_repro(
        chromium, tmp_path: Path, flowers_mini: Path, mobilenet_v2_weights: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole loop on a real repository: `dvc repro` ranks the pictures, a person rejects the
    top suspect and moves the next one in Chromium, the decisions are in data/curation.csv, and
    the next `dvc repro` re-runs only the split, which drops the one and files the other anew."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    repo = tiny_repository(tmp_path / "repo", flowers_mini, mobilenet_v2_weights)
    assert stages_run(sh(repo, "dvc", "repro", "label")) == ["scrape", "clean", "audit", "label"]
    monkeypatch.chdir(repo)
    top = read_csv(SUSPECTS)[0]
    with serving() as server:
        driver = chromium
        driver.set_window_size(1280, 900)
        driver.get(server.url)
        _until(driver, _card_is(driver, top["image"], "focused"), "the top suspect is not first")
        _keys(driver, "2")  # all pictures of the class: there is always a next one to move
        _keys(driver, "r")
        _until(driver, _card_is(driver, top["image"], "reject"), "r did not reject")
        moved = _until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .card.focused"),
                       "no picture is focused after the rejection")[0].get_attribute("data-image")
        target = next(name for name in CLASSES if name != top["class"])
        _keys(driver, "m")
        field = driver.find_element(By.ID, "move-filter")
        _until(driver, lambda _: field.is_displayed(), "m did not open the class chooser")
        field.send_keys(target, Keys.ENTER)
        _until(driver, _card_is(driver, moved, "relabel"), "the picture was not moved")
        driver.refresh()  # both decisions are read back from the file
        _keys(driver, "2")
        _until(driver, _card_is(driver, top["image"], "reject"), "the rejection is gone")
        _until(driver, _card_is(driver, moved, "relabel"), "the move is gone")

    assert {row["image"]: (row["decision"], row["class"]) for row in decisions_file()} == {
        top["image"]: ("reject", ""), moved: ("relabel", target)}
    assert stages_run(sh(repo, "dvc", "repro", "label")) == ["label"]
    split = {content_id(row["path"]): row["class"]
             for path in SPLIT_FILES.values() for row in read_csv(path)}
    assert top["image"] not in split
    assert split[moved] == target

"""The service's web page (``GET /``): a real ``serve`` on a loopback port (uvicorn, a real
ONNX Runtime engine, ModelScope's real Voice/SambertHifigan code with the kantts stand-in of
tests/modelscope_harness.py) driven by a real headless Chromium through selenium.

The page exposes what it decoded as data attributes on ``#result`` (``data-samples``,
``data-first-audio-ms``, ...), so the tests check the audio the browser actually assembled
from the stream, not what the server meant to send.

Chromium comes from Debian: ``apt-get install -y chromium chromium-driver``; without it the
browser tests skip with that line and the HTTP-level tests still run.
"""
from __future__ import annotations

import base64
import io
import os
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml

import modelscope_harness as harness
from live_server import serving
from hifitrt.engines.profiles import ShapeProfile
from hifitrt.export import kantts_random as synthetic

VOICE = "voice_a"
CHANNELS = 80
SENTENCE = "今天天气很好，我们一起去公园散步吧。"
SPEECH_FRAMES = 150
MEL_FRAMES = 97
API_KEY = "webui-test-key"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage",
)
WAIT_S = 30


# ------------------------------------------------------------------------------------ fixtures

def _mel(frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.standard_normal((CHANNELS, frames)), axis=1) * 0.1 - 4.0).astype(np.float32)


@pytest.fixture(scope="module")
def voice_engine(tmp_path_factory):
    """(model dir, engine dir, hop): a small 16 kHz KAN-TTS voice, its ONNX Runtime engine and
    the engine's parity report.

    The report measures one real mel (engine vs PyTorch) and is written by the same
    ``write_report`` as ``tts-build-engine check``, whose full sweep takes ~30 s here.
    """
    from hifitrt.engines.build import build_engine
    from hifitrt.engines.manifest import read_manifest
    from hifitrt.export.load import load_vocoder
    from hifitrt.runtime import VocoderEngine
    from hifitrt.validation.check import engine_summary
    from hifitrt.validation.metrics import Thresholds
    from hifitrt.validation.report import measure_case, write_report

    root = tmp_path_factory.mktemp("webui")
    config = yaml.safe_load((synthetic.kantts_configs_dir() / "hifigan_v1_16k.yaml").read_text())
    config["Model"]["Generator"]["params"].update(channels=32, resblock_kernel_sizes=[3], resblock_dilations=[[1, 3]])
    small = root / "small_16k.yaml"
    small.write_text(yaml.safe_dump(config))
    model_dir = synthetic.make_modelscope_model_dir(root / "model", [(VOICE, small, 1)], scale=0.5)
    engine_dir = root / "engine"
    build_engine(model_dir, engine_dir, voice=VOICE, backend="onnxruntime", precision="fp32",
                 profiles=[ShapeProfile(1, 1, 8, 16, 64, 256, "p")], verify_export=False)

    mel = _mel(64, 5)[None]
    with torch.no_grad():
        reference = load_vocoder(str(model_dir), voice=VOICE).module(torch.from_numpy(mel)).numpy()
    with VocoderEngine.load(engine_dir) as engine:
        candidate = engine(mel[0])[None, None]
    case = measure_case(reference, candidate, sample_rate=16000, thresholds=Thresholds.fp32(), profile="p",
                        input_name="random mel", frames=64, keep_waveforms=False, with_pesq=False)
    write_report(engine_dir / "report", [case], engine=engine_summary(read_manifest(engine_dir), engine_dir),
                 thresholds=Thresholds.fp32(), sample_rate=16000)
    hop = int(np.prod(config["Model"]["Generator"]["params"]["upsample_scales"]))
    return model_dir, engine_dir, hop


@contextmanager
def _serving(app):
    """``app`` on a real uvicorn server (the service's draining server) on a free loopback port."""
    from hifitrt.serving.server import DrainingServer

    with serving(app, lambda config: DrainingServer(config, app)) as base:
        yield base


@pytest.fixture(scope="module")
def service(voice_engine):
    """Base URL of a service with text to speech: ModelScope's real SambertHifigan whose one
    voice speaks SENTENCE as a SPEECH_FRAMES-frame mel, vocoded through the served engine."""
    from hifitrt.serving import ServeOptions, create_app

    model_dir, engine_dir, _ = voice_engine
    voice = harness.make_voice(VOICE, model_dir / "voices" / VOICE, {SENTENCE: _mel(SPEECH_FRAMES, 1)})
    model = harness.make_model({VOICE: voice}, 16000)
    app = create_app([str(engine_dir)], options=ServeOptions(max_wait_ms=2.0), speech_model=model)
    with _serving(app) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_vocoder_service(voice_engine):
    """Base URL of a service as `serve ENGINE --voice voice_b=ENGINE --api-key KEY` makes it:
    two voices, no --model (vocoder only)."""
    from hifitrt.serving import ServeOptions, create_app
    from hifitrt.serving.voices import VoiceSpec

    _, engine_dir, _ = voice_engine
    app = create_app([VoiceSpec(str(engine_dir)), VoiceSpec(str(engine_dir), "voice_b")],
                     options=ServeOptions(api_key=API_KEY))
    with _serving(app) as base:
        yield base


@pytest.fixture(scope="module")
def slow_service(voice_engine):
    """Base URL of a service whose batcher holds a lone request for 3 s waiting for company
    (batching is asked for explicitly: on a CPU `serve` does not batch by default)."""
    from hifitrt.serving import ServeOptions, create_app

    _, engine_dir, _ = voice_engine
    with _serving(create_app([str(engine_dir)], options=ServeOptions(max_wait_ms=3000.0, max_batch=8))) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromedriver: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


# ------------------------------------------------------------------------------------ helpers

def _wait(driver, condition, what: str, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def _open(driver, base: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    _wait(driver, lambda d: d.find_element(By.ID, "voice").is_enabled()
          or not d.find_element(By.ID, "key-panel").get_attribute("hidden"), "the page loads its voices")


def _result(driver) -> dict[str, str]:
    return driver.execute_script("return Object.assign({}, document.getElementById('result').dataset)")


def _finished(driver) -> dict[str, str]:
    _wait(driver, lambda d: _result(d)["state"] in ("done", "error"), "the request finishes")
    return _result(driver)


def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _downloaded_wav(driver) -> bytes:
    """The bytes behind the page's download link (the WAV the page assembled from the stream)."""
    encoded = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById('download').href).then((r) => r.arrayBuffer()).then((buf) => {
          let s = ''; new Uint8Array(buf).forEach((b) => { s += String.fromCharCode(b); }); done(btoa(s));
        });""")
    return base64.b64decode(encoded)


def _upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.execute_script("document.getElementById('mel-panel').open = true")
    driver.find_element(By.ID, "mel-file").send_keys(str(path))
    driver.find_element(By.ID, "vocode").click()


# ------------------------------------------------------------------------------ HTTP-level tests

def test_page_is_self_contained(service):
    page = httpx.get(service + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    bodies = [page.text]
    for name, media in (("app.js", "text/javascript"), ("app.css", "text/css")):
        r = httpx.get(f"{service}/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media)
        bodies.append(r.text)
    for text in bodies:  # no CDN, no external fonts: nothing that names another origin
        assert "http://" not in text and "https://" not in text and "@import" not in text


def test_only_the_report_is_reachable(service, voice_engine):
    _, engine_dir, _ = voice_engine
    report = httpx.get(f"{service}/v1/voices/{VOICE}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert report.content == (engine_dir / "report" / "report.html").read_bytes()
    assert httpx.head(f"{service}/v1/voices/{VOICE}/report").status_code == 200
    outside = [
        f"/v1/voices/{VOICE}/manifest.json", f"/v1/voices/{VOICE}/report.json",
        f"/v1/voices/{VOICE}/report/report.json", "/v1/voices/nope/report",
        "/v1/voices/..%2F..%2F..%2Fetc%2Fpasswd/report", f"/v1/voices/{VOICE}%2F..%2Fmanifest.json/report",
        "/static/webui.py", "/static/..%2Fwebui.py", "/static/%2E%2E/app.py", "/static/", "/report/report.html",
        "/manifest.json", "/static/index.html/..",
    ]
    with httpx.Client(base_url=service) as client:
        for path in outside:
            r = client.send(client.build_request("GET", path))  # sent as written, not normalised
            assert r.status_code == 404, path
            message = r.json()["error"]["message"]
            assert message and "\n" not in message and "Traceback" not in message


# -------------------------------------------------------------------------------- browser tests

def test_speak_streams_audio_and_shows_figures(browser, service, voice_engine):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    _, _, hop = voice_engine
    _open(browser, service)
    options = [o.text for o in Select(browser.find_element(By.ID, "voice")).options]
    assert len(options) == 1 and VOICE in options[0]
    assert all(word in options[0] for word in ("16000 Hz", "onnxruntime", "fp32"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#voices tbody tr")
    assert len(rows) == 1 and "16000 Hz" in rows[0].text
    text = browser.find_element(By.ID, "text")
    assert text.get_attribute("value").strip()  # a Chinese sample sentence is prefilled
    text.clear()
    text.send_keys(SENTENCE)
    text.send_keys(Keys.CONTROL, Keys.ENTER)  # keyboard only
    result = _finished(browser)
    assert result["state"] == "done", browser.find_element(By.ID, "error-text").text
    assert int(result["samples"]) == SPEECH_FRAMES * hop
    assert int(result["sampleRate"]) == 16000
    # each chunk was decoded and started on the AudioContext as it arrived
    assert int(result["scheduled"]) == int(result["chunks"]) >= 1
    assert float(result["firstAudioMs"]) > 0 and float(result["totalMs"]) >= float(result["firstAudioMs"])
    assert browser.find_element(By.ID, "fig-first").text.endswith("ms")
    assert browser.find_element(By.ID, "fig-duration").text == f"{SPEECH_FRAMES * hop / 16000:.2f} s"
    assert float(browser.find_element(By.ID, "fig-rtf").text) > 0
    wav = _downloaded_wav(browser)
    assert wav[:4] == b"RIFF" and len(wav) == 44 + 2 * SPEECH_FRAMES * hop
    reference = httpx.post(f"{service}/v1/audio/speech", json={
        "model": "any", "input": SENTENCE, "voice": VOICE, "response_format": "pcm"}, timeout=WAIT_S)
    assert wav[44:] == reference.content  # what the page assembled from the stream = the whole answer
    # the live panel reads /metrics: the audio just produced shows up there
    _wait(browser, lambda d: d.find_element(By.ID, "m-audio").text not in ("–", "0.0 s"), "metrics update")
    assert float(browser.find_element(By.ID, "m-batch").text) >= 1  # from the batch histogram's deltas
    if os.environ.get("WEBUI_SCREENSHOT"):  # docs/webui.png: WEBUI_SCREENSHOT=docs/webui.png pytest ...
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, height + 200)  # the whole page, no scrollbar
        browser.save_screenshot(os.environ["WEBUI_SCREENSHOT"])
        browser.set_window_size(1280, 1000)


def test_mel_upload_streams_the_vocoded_audio(browser, service, voice_engine, tmp_path):
    from selenium.webdriver.common.by import By

    _, _, hop = voice_engine
    mel = _mel(MEL_FRAMES, 7)
    path = tmp_path / "mel.npy"
    path.write_bytes(_npy_bytes(mel))
    _open(browser, service)
    assert browser.find_element(By.ID, "mel-shape").get_attribute("textContent") == f"[{CHANNELS}, frames]"
    _upload(browser, path)
    result = _finished(browser)
    assert result["state"] == "done"
    assert int(result["samples"]) == MEL_FRAMES * hop and float(result["firstAudioMs"]) > 0
    whole = httpx.post(f"{service}/v1/vocode", params={"voice": VOICE, "format": "pcm"},
                       content=_npy_bytes(mel), timeout=WAIT_S)
    assert _downloaded_wav(browser)[44:] == whole.content


def test_bad_upload_shows_its_one_line_error_and_retry_works(browser, service, voice_engine, tmp_path):
    from selenium.webdriver.common.by import By

    _, _, hop = voice_engine
    bad = tmp_path / "notes.npy"
    bad.write_text("this is not a numpy file\nsecond line\n")
    _open(browser, service)
    _upload(browser, bad)
    result = _finished(browser)
    assert result["state"] == "error"
    error = browser.find_element(By.ID, "error-text").text
    assert "not a .npy file" in error and "\n" not in error and "Traceback" not in error
    retry = browser.find_element(By.ID, "retry")
    assert retry.is_displayed()
    _wait(browser, lambda d: "invalid_request:" in d.find_element(By.ID, "m-errors").text,
          "the live panel lists the error by kind")
    good = tmp_path / "good.npy"
    good.write_bytes(_npy_bytes(_mel(40, 3)))
    browser.find_element(By.ID, "mel-file").send_keys(str(good))
    retry.click()
    _wait(browser, lambda d: _result(d)["state"] == "done", "the retried request succeeds")
    assert int(_result(browser)["samples"]) == 40 * hop
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_report_link_opens_the_report(browser, service):
    _open(browser, service)
    _open_report_tab(browser)


def test_vocoder_only_service_asks_for_the_key(browser, keyed_vocoder_service, voice_engine, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, _, hop = voice_engine
    _open(browser, keyed_vocoder_service)
    assert browser.find_element(By.ID, "key-panel").is_displayed()
    assert "API key" in browser.find_element(By.ID, "service-status").text
    browser.find_element(By.ID, "api-key").send_keys(API_KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "voice").is_enabled(), "voices load with the key")
    assert not browser.find_element(By.ID, "key-panel").is_displayed()
    assert not browser.find_element(By.ID, "speak-form").is_displayed()  # no --model: no Speak
    assert browser.find_element(By.ID, "mel-panel").get_attribute("open") is not None
    picker = Select(browser.find_element(By.ID, "voice"))
    assert [o.text.split(" ")[0] for o in picker.options] == [VOICE, "voice_b"]
    picker.select_by_index(1)
    path = tmp_path / "mel.npy"
    path.write_bytes(_npy_bytes(_mel(MEL_FRAMES, 11)))
    _upload(browser, path)
    result = _finished(browser)
    assert result["state"] == "done" and int(result["samples"]) == MEL_FRAMES * hop
    _wait(browser, lambda d: int(d.find_element(By.ID, "live").get_attribute("data-polls")) > 0,
          "metrics are read with the key")
    # the live panel counted the upload as voice_b's audio: its /metrics sample says so
    metrics = httpx.get(f"{keyed_vocoder_service}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    assert f'hifitrt_audio_seconds_total{{voice="voice_b"}} {MEL_FRAMES * hop / 16000}' in metrics
    kept = browser.execute_script(
        "return [localStorage.length, sessionStorage.length, document.cookie, document.body.innerHTML]")
    assert kept[:3] == [0, 0, ""] and API_KEY not in kept[3]  # in memory only
    # a link cannot send the key: the page fetches the report with it and opens that
    assert httpx.get(f"{keyed_vocoder_service}/v1/voices/{VOICE}/report").status_code == 401
    _open_report_tab(browser)


def _open_report_tab(browser) -> None:
    """Click the voice's report link; check the report opens in a new tab; close that tab."""
    from selenium.webdriver.common.by import By

    link = _wait(browser, lambda d: d.find_element(By.LINK_TEXT, "report"), "a report link")
    main = browser.current_window_handle
    link.click()
    _wait(browser, lambda d: len(d.window_handles) == 2, "the report opens in a new tab")
    browser.switch_to.window([h for h in browser.window_handles if h != main][0])
    try:
        _wait(browser, lambda d: "hifitrt parity report" in d.title, "the report's title")
        assert browser.find_element(By.TAG_NAME, "h1").text.startswith("hifitrt parity report")
    finally:
        browser.close()
        browser.switch_to.window(main)


def test_phone_width_and_labels(browser, service):
    try:
        browser.set_window_size(390, 844)
        _open(browser, service)
        layout = browser.execute_script("""
            const controls = [...document.querySelectorAll('input, select, textarea')];
            return {
              overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
              unlabelled: controls.filter((c) => !c.labels.length && !c.getAttribute('aria-label')).map((c) => c.id),
              buttons: [...document.querySelectorAll('button')].filter((b) => !b.textContent.trim()).length,
              speakWidth: document.getElementById('speak').getBoundingClientRect().width,
            };""")
        assert layout["overflow"] <= 0 and layout["unlabelled"] == [] and layout["buttons"] == 0
        assert 300 <= layout["speakWidth"] <= 390
    finally:
        browser.set_window_size(1280, 1000)


def test_a_request_that_takes_too_long_times_out_with_retry(browser, slow_service, tmp_path):
    from selenium.webdriver.common.by import By

    path = tmp_path / "mel.npy"
    path.write_bytes(_npy_bytes(_mel(MEL_FRAMES, 13)))
    browser.get(slow_service + "/?timeout_s=1")
    _wait(browser, lambda d: d.find_element(By.ID, "vocode").is_enabled(), "the page loads its voices")
    _upload(browser, path)
    result = _finished(browser)
    assert result["state"] == "error"  # given up after 1 s without data, before the batch ran
    error = browser.find_element(By.ID, "error-text").text
    assert error.startswith("timed out") and "\n" not in error
    assert browser.find_element(By.ID, "retry").is_displayed()
    assert browser.find_element(By.ID, "vocode").is_enabled()  # the page is usable again

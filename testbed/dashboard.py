#!/usr/bin/python3
"""Drives vxgate's dashboard in headless Chromium (Debian's chromium + chromium-driver,
through Selenium; nothing downloaded) and checks it against the admin API it reads. Run it
inside the namespace whose loopback has the admin API.

    dashboard.py open  ADMIN_URL SHOTS_DIR STOP_CMD...   the pages match GET /v1/*; a label
        that is markup shows as text and runs nothing (positive control: the same string
        as markup does run); STOP_CMD stops a backend and the page shows it unhealthy
        without a reload (prints the delay); the Events page lists the transition
    dashboard.py token ADMIN_URL SHOTS_DIR TOKEN         the login form: a wrong token is
        refused, the right one shows the pages; the token only in sessionStorage
    dashboard.py left  ADMIN_URL SHOTS_DIR NODE          NODE is listed among the nodes that
        left (its etcd lease ended), with when it was last seen

Prints "ok: ..." lines; exits 1 on the first failure.
"""
import json, os, re, subprocess, sys, time, urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

XSS = "<img src=x onerror=alert(1)>"


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def api(base, path, token=None):
    req = urllib.request.Request(base + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def browser(shots):
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--no-first-run", "--window-size=1280,900", f"--user-data-dir={shots}/profile"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def wait(what, cond, secs=10):
    t0, err = time.time(), None
    while time.time() - t0 < secs:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the page redraws under us: try again
            err = e
        time.sleep(0.05)
    last = getattr(cond, "last", None) or (err and f"{type(err).__name__}: {err}")
    fail(f"{what}: not within {secs} s{' (last: %s)' % (last,) if last else ''}")


def main_text(d):
    # read in one script call: the page redraws every 2 s, so element handles go stale
    return d.execute_script("return document.getElementById('main').innerText").replace("\t", " ")


def rows(d, sel="#main tr"):
    return [t.replace("\t", " ").strip() for t in d.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(r => r.innerText)", sel)]


def go(d, base, page):
    d.get(f"{base}/ui/#{page}")
    wait(f"the {page} page", lambda: d.find_element(By.ID, "main").get_attribute("data-page") == page
         and d.find_elements(By.CSS_SELECTOR, "#main section"))


def no_alert(d):
    try:
        text = d.switch_to.alert.text
    except NoAlertPresentException:
        return True
    fail(f"an alert ran: {text!r}")


def check_open(base, shots, stop_cmd):
    d = browser(shots)
    try:
        # Services: every service, backend, address and health of GET /v1/services
        go(d, base, "services")
        # the page and the API agree (both read again until they do: health moves)
        def agree():
            services = api(base, "/v1/services")
            want = [(s["name"], b["name"], f'{b["ip"]}:{b["port"]}', b["health"]) for s in services for b in s["backends"]]
            text, have = main_text(d), rows(d)
            for s, n, addr, h in want:
                row = [r for r in have if r.startswith(f"{n} {addr} ")]
                if f"Service {s}" not in text or not row or f" {h} " not in f" {row[0]} ":
                    agree.last = (n, row, h)
                    return None
            return services, want
        agree.last = None
        services, want = wait("the services page agreeing with GET /v1/services", agree, 15)
        # live numbers: under the test's load, web's request rate and latency are drawn
        def web_rate():
            t = main_text(d)
            part = t[t.index("Service web"):]
            rate = float(part.split("requests", 1)[1].split()[0].rstrip("/s"))
            return rate > 0 and "p50" in part and "ms" in part.split("p50", 1)[1].split("container", 1)[0] and rate
        rate = wait("web's request rate and p50 on the page", web_rate, 15)
        print(f"ok: services page: {len(services)} services, {len(want)} backends with the API's health; web at {rate}/s with its p50", flush=True)
        time.sleep(6)  # a few points in the sparklines
        d.save_screenshot(f"{shots}/services.png")

        # Containers: the same containers; labels as text; the markup label runs nothing
        go(d, base, "containers")
        cs = api(base, "/v1/containers")
        wait("every container on the containers page", lambda: all(c["name"] in main_text(d) for c in cs))
        if XSS not in main_text(d):
            fail("the label with markup is not shown as text")
        imgs = d.execute_script("return document.querySelectorAll('img').length")
        if imgs:
            fail(f"{imgs} <img> elements: a label became markup")
        time.sleep(0.5)
        no_alert(d)
        errors = [l for l in d.get_log("browser") if l["level"] == "SEVERE"]
        if errors:
            fail(f"console errors: {errors}")
        box = d.find_element(By.ID, "filter")
        box.send_keys("h2c")
        wait("the filter", lambda: "h1c1" not in main_text(d) and "h2c1" in main_text(d))
        print(f"ok: containers page: all {len(cs)} containers; the label {XSS!r} shown as text, no <img>, no alert, no console error; the filter narrows", flush=True)
        d.save_screenshot(f"{shots}/containers.png")
        # the positive control: the same string inserted as markup makes an <img> (what the
        # check above looks for), whose inline handler the page's CSP then refuses to run
        d.execute_script("const x = document.createElement('div'); x.id = 'control'; document.body.append(x); x.innerHTML = arguments[0];", XSS)
        made = d.execute_script("return document.querySelectorAll('img').length")
        if made != 1:
            fail(f"the control made {made} <img> elements, not 1: the check could not see markup")
        blocked = wait("the CSP refusing the control's handler", lambda: [
            l for l in d.get_log("browser") if "Content Security Policy" in l["message"]], 5)
        no_alert(d)
        d.execute_script("document.getElementById('control').remove()")
        print(f"ok: positive control: the same label inserted as markup makes an <img>, and the page's CSP refuses its handler ({blocked[0]['message'][:80]}…)", flush=True)

        for page in ("fleet", "dns", "overlay"):
            go(d, base, page)
            time.sleep(2.5)  # two samples: rates and sparklines
            d.save_screenshot(f"{shots}/{page}.png")
            stray = re.findall(r"\b(?:null|undefined|NaN)\b", main_text(d))
            if stray:  # a value the page failed to format, or an empty section drawn as text
                fail(f"the {page} page shows {stray}")
        nodes = api(base, "/v1/nodes")
        go(d, base, "fleet")
        wait("every node on the fleet page", lambda: all(n["name"] in main_text(d) for n in nodes))
        # bytes per peer: each plain VXLAN peer's row on the fleet page shows what
        # /v1/overlay/peers counts (the page rounds; health checks add a few bytes meanwhile)
        units = {"kB": 1e3, "MB": 1e6, "GB": 1e9}

        def shown(text):
            m = re.search(r"([0-9.]+) (kB|MB|GB) / ([0-9.]+) (kB|MB|GB)", text)
            return m and (float(m[1]) * units[m[2]], float(m[3]) * units[m[4]])

        def peer_bytes_agree():
            peers = [p for p in api(base, "/v1/overlay/peers") if p["transport"] == "vxlan" and p["node"]]
            if not peers or min(p["tx_bytes"] for p in peers) == 0:
                peer_bytes_agree.last = ("no plain peer with bytes sent", peers)
                return None
            for p in peers:
                row = next((r for r in rows(d) if r.split(" ", 1)[0] == p["node"]), "")
                got = shown(row)
                if not got or not all(abs(g - w) <= 0.1 * w + 2e3 for g, w in zip(got, (p["tx_bytes"], p["rx_bytes"]))):
                    peer_bytes_agree.last = (row, p)
                    return None
            return peers
        peers = wait("bytes per peer on the fleet page as /v1/overlay/peers counts them", peer_bytes_agree, 15)
        go(d, base, "overlay")
        wait("the overlay page", lambda: "Network default" in main_text(d) and "Datapath" in main_text(d)
             and all(any(p["vtep"] in r and "vxlan" in r and "datagrams" in r for r in rows(d)) for p in peers))
        go(d, base, "dns")
        wait("the dns page with queries", lambda: "NOERROR" in main_text(d)
             and float(main_text(d).split("queries", 1)[1].split()[0].rstrip("/s")) > 0)
        if len(nodes) < 2:
            fail(f"/v1/nodes lists {len(nodes)} nodes on a two-host fleet")
        print(f"ok: fleet page lists the {len(nodes)} nodes of /v1/nodes, with bytes out/in per plain VXLAN peer as /v1/overlay/peers counts them ({', '.join(p['node'] + ' ' + str(p['tx_bytes']) + '/' + str(p['rx_bytes']) for p in peers)}); overlay page lists each peer's datagrams; DNS page with its query rate", flush=True)

        # liveness: a backend stopped turns unhealthy on the open page, no reload
        go(d, base, "services")
        d.execute_script("window.__notReloaded = true")
        victim = "h1c1"
        t0 = time.time()
        subprocess.run(stop_cmd, check=True)

        def unhealthy_on_page():
            mine = [r for r in rows(d) if r.startswith(victim + " ")]
            return mine and "unhealthy" in mine[0]
        wait(f"{victim} unhealthy on the page", unhealthy_on_page, 10)
        took = time.time() - t0
        if not d.execute_script("return window.__notReloaded === true"):
            fail("the page reloaded")
        if took > 3:
            fail(f"the page showed {victim} unhealthy {took:.2f} s after it stopped (more than 3 s)")
        print(f"ok: {victim} stopped: unhealthy on the open page {took:.2f} s later, without a reload", flush=True)
        d.save_screenshot(f"{shots}/services-unhealthy.png")

        go(d, base, "events")
        wait("the transition on the events page", lambda: any(
            f" health {victim} " in f" {r} " for r in rows(d, "#main tbody tr")))
        first = rows(d, "#main tbody tr")[0]
        d.save_screenshot(f"{shots}/events.png")
        print(f"ok: events page: newest first: {first!r}", flush=True)
    finally:
        d.quit()


def check_token(base, shots, token):
    d = browser(shots)
    try:
        d.get(f"{base}/ui/#services")
        wait("the login form", lambda: d.find_element(By.ID, "login").is_displayed())
        if d.find_elements(By.CSS_SELECTOR, "#main section"):
            fail("data shown before signing in")
        d.save_screenshot(f"{shots}/login.png")
        d.find_element(By.ID, "token").send_keys("wrong-" + token)
        d.find_element(By.CSS_SELECTOR, "#login button").click()
        wait("the refusal", lambda: "refused" in d.find_element(By.ID, "login-error").text)
        if d.find_elements(By.CSS_SELECTOR, "#main section") and d.find_element(By.ID, "main").is_displayed():
            fail("data shown with a wrong token")
        print("ok: with admin.token_file: the login form; a wrong token refused, nothing shown", flush=True)
        box = d.find_element(By.ID, "token")
        box.clear()
        box.send_keys(token)
        d.find_element(By.CSS_SELECTOR, "#login button").click()
        wait("the services after signing in", lambda: "Service " in main_text(d))
        stored = d.execute_script("return [sessionStorage.getItem('vxgate.token'), localStorage.length, document.cookie, location.href]")
        if stored[0] != token or stored[1] != 0 or stored[2] != "" or token in stored[3]:
            fail(f"the token is not kept in sessionStorage alone: {stored}")
        print("ok: the right token shows the pages; it is in sessionStorage only (no localStorage, no cookie, not in the URL)", flush=True)
    finally:
        d.quit()


def check_left(base, shots, node):
    d = browser(shots)
    try:
        go(d, base, "fleet")
        wait(f"{node} among the nodes that left", lambda: "Nodes that left" in main_text(d)
             and node in main_text(d).split("Nodes that left", 1)[1], 15)
        gone = [n for n in api(base, "/v1/nodes") if n["name"] == node]
        if not gone or gone[0]["present"] or not gone[0].get("last_seen_ms"):
            fail(f"/v1/nodes does not say when {node} was last seen: {gone}")
        d.save_screenshot(f"{shots}/fleet-left.png")
        print(f"ok: {node} stopped: the fleet page lists it among the nodes that left, with when it was last seen", flush=True)
    finally:
        d.quit()


if __name__ == "__main__":
    mode, base, shots = sys.argv[1:4]
    os.makedirs(shots, exist_ok=True)
    if mode == "open":
        check_open(base, shots, sys.argv[4:])
    elif mode == "left":
        check_left(base, shots, sys.argv[4])
    else:
        check_token(base, shots, sys.argv[4])

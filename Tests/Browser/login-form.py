#!/usr/bin/python3
"""Drives the example app's login form in Debian's headless Chromium over the DevTools protocol (python3-websocket):
opens /login, types the user name and password, and, when the app shows the one-time-password step, types the
current TOTP code of the base32 secret given. Prints one JSON object: the OTP question shown (or null), the page
reached and its text.

usage: login-form.py BASE_URL USER PASSWORD [TOTP_SECRET_BASE32]   (Debian's /usr/bin/python3: it has python3-websocket)"""
import base64, hashlib, hmac, json, os, shutil, struct, subprocess, sys, tempfile, time, urllib.request
import websocket

TIMEOUT = 60  # seconds for any one page load: a loaded CI machine starts Chromium slowly


def totp(secret):
    """The current code, waiting out a step boundary so that it is still valid when FreeRADIUS checks it."""
    left = 30 - time.time() % 30
    if left < 4:
        time.sleep(left + 0.2)
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
    offset = mac[19] & 0x0F
    return "%06d" % ((struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000)


class Page:
    def __init__(self, url):
        self.socket = websocket.create_connection(url, timeout=TIMEOUT, suppress_origin=True)
        self.next_id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    sys.exit(f"login-form: {method}: {message['error']}")
                return message.get("result", {})

    def wait_for_load(self, action):
        """Runs action (which starts a navigation) and returns once the new page has loaded."""
        action()
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("method") == "Page.loadEventFired":
                return
        sys.exit("login-form: the page did not load")

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            sys.exit(f"login-form: {expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def fill_and_submit(self, values):
        script = "".join(f"document.getElementById({json.dumps(k)}).value = {json.dumps(v)};" for k, v in values.items())
        self.wait_for_load(lambda: self.evaluate(script + "document.getElementById('submit').click(); true"))


def main():
    base, user, password = sys.argv[1:4]
    secret = sys.argv[4] if len(sys.argv) > 4 else None
    profile = tempfile.mkdtemp(prefix="login-form-chromium-")
    chromium = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                                 f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + TIMEOUT
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if time.time() > deadline or chromium.poll() is not None:
                sys.exit("login-form: Chromium did not start")
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT))
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        page.wait_for_load(lambda: page.call("Page.navigate", url=base + "/login"))
        page.fill_and_submit({"username": user, "password": password})
        question = page.evaluate("(document.getElementById('question') || {}).textContent || null")
        if question and secret:
            page.fill_and_submit({"otp": totp(secret)})
        print(json.dumps({"question": question, "url": page.evaluate("location.href"), "text": page.evaluate("document.body.innerText")}))
    finally:
        chromium.terminate()
        try:
            chromium.wait(timeout=10)
        except subprocess.TimeoutExpired:
            chromium.kill()
        shutil.rmtree(profile, ignore_errors=True)


main()

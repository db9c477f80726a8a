#!/usr/bin/env python3
"""Exchange messages, requests and replies between the `switchboard` CLI and plain clients written in Python.

Usage: plain_clients.py BROKER SWITCHBOARD_BINARY
BROKER is nats, redis or amqp; URLs come from SWITCHBOARD_<BROKER>_URL with loopback
defaults. Both directions are checked byte for byte, and headers as the broker's own
headers where it has them (NATS, AMQP). Exits 0 and prints "N passed, 0 failed" on
success; prints what differed and exits 1 otherwise.
"""
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid

BROKER = sys.argv[1]
BINARY = sys.argv[2]
URLS = {
    "nats": os.environ.get("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222"),
    "redis": os.environ.get("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379"),
    "amqp": os.environ.get("SWITCHBOARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
}
URL = URLS[BROKER]
PREFIX = "interop." + uuid.uuid4().hex[:12]
# Bytes a shell argument can carry: UTF-8 with a tab, quotes and a non-ASCII letter.
TEXT = "CPU at 98% \t \"quoted\" héllo ✓"
failures = []
passed = 0


def check(name, ok, detail=""):
    global passed
    if ok:
        passed += 1
        print(f"ok   {BROKER}: {name}")
    else:
        failures.append(name)
        print(f"FAIL {BROKER}: {name}: {detail}")


def sb(*args, **kw):
    return subprocess.run([BINARY, "--broker", URL, *args], capture_output=True, timeout=30, **kw)


def start_listener(pattern, count):
    """Starts `switchboard listen` and returns it once it said it is subscribed."""
    proc = subprocess.Popen(
        [BINARY, "--broker", URL, "listen", "--on", pattern, "--count", str(count), "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ready = threading.Event()
    lines = []

    def watch():
        for line in proc.stderr:
            lines.append(line.decode(errors="replace"))
            if b"listening" in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    if not ready.wait(20):
        proc.kill()
        raise SystemExit(f"switchboard listen did not get ready: {''.join(lines)}")
    return proc


def start_replier(pattern, *answer):
    """Starts `switchboard reply --count 1` and returns it once it answers requests."""
    proc = subprocess.Popen(
        [BINARY, "--broker", URL, "reply", "--on", pattern, "--count", "1", *answer],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ready = threading.Event()
    lines = []

    def watch():
        for line in proc.stderr:
            lines.append(line.decode(errors="replace"))
            if "answering requests on" in lines[-1]:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    if not ready.wait(15):
        proc.kill()
        raise SystemExit(f"switchboard reply did not start: {lines}")
    proc.lines = lines
    return proc


def replier_done(proc):
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return False
    return proc.returncode == 0


def sb_request(subject, payload, *extra):
    """`switchboard request`, returning (exit code, the reply as JSON or None, stderr)."""
    r = sb("request", "--on", subject, "--timeout", "10s", "--format", "json", *extra, payload)
    reply = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None
    return r.returncode, reply, r.stderr.decode(errors="replace")


def listener_output(proc):
    out, _ = proc.communicate(timeout=20)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


# ---------------------------------------------------------------- NATS
async def nats_main():
    import nats

    nc = await nats.connect(URL)
    # switchboard send -> plain subscriber
    subject = f"{PREFIX}.to_plain"
    sub = await nc.subscribe(subject)
    await nc.flush()
    r = sb("send", "--on", subject, "--header", "severity=high", "--header", "Trace-Id=abc 1", TEXT)
    check("send exits 0", r.returncode == 0, r.stderr.decode())
    msg = await sub.next_msg(timeout=5)
    check("payload byte-for-byte to plain client", msg.data == TEXT.encode(), repr(msg.data))
    hdrs = msg.headers or {}
    check("headers arrive as NATS headers", hdrs.get("severity") == "high" and hdrs.get("Trace-Id") == "abc 1", repr(hdrs))
    r = sb("send", "--on", subject, "plain")
    msg = await sub.next_msg(timeout=5)
    check("no headers -> plain PUB", msg.data == b"plain" and not msg.headers, repr((msg.data, msg.headers)))

    # plain publisher -> switchboard listen
    listener = start_listener(f"{PREFIX}.from_plain.>", 2)
    binary = bytes(range(256))
    await nc.publish(f"{PREFIX}.from_plain.a", binary, headers={"k": "v", "Mixed-Case": "Yes"})
    await nc.publish(f"{PREFIX}.from_plain.b.c", TEXT.encode())
    await nc.flush()
    got = await asyncio.get_running_loop().run_in_executor(None, listener_output, listener)
    check("listen got both", len(got) == 2, repr(got))
    if len(got) == 2:
        import base64
        check("binary payload arrives exactly (base64 in JSON)", base64.b64decode(got[0].get("payload_base64", "")) == binary, repr(got[0]))
        check("NATS headers arrive as headers", got[0].get("headers") == {"k": "v", "Mixed-Case": "Yes"}, repr(got[0]))
        check("text payload arrives exactly", got[1].get("payload") == TEXT and got[1].get("subject") == f"{PREFIX}.from_plain.b.c", repr(got[1]))

    # plain requester -> switchboard reply
    replier = start_replier(f"{PREFIX}.rr.>", "--echo")
    try:
        msg = await nc.request(f"{PREFIX}.rr.a", TEXT.encode(), timeout=10, headers={"k": "v"})
        check("switchboard reply answers a plain request", msg.data == TEXT.encode() and (msg.headers or {}).get("k") == "v", repr((msg.data, msg.headers)))
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        check("switchboard reply answers a plain request", False, repr(e))
    check("reply exits 0 after --count 1", replier_done(replier), "".join(replier.lines))

    # switchboard request -> plain responder
    async def respond(msg):
        await msg.respond(b"pong:" + msg.data)

    await nc.subscribe(f"{PREFIX}.rr.plain", cb=respond)
    await nc.flush()
    code, reply, err = await asyncio.get_running_loop().run_in_executor(None, sb_request, f"{PREFIX}.rr.plain", "ping")
    check("switchboard request gets a plain responder's reply", code == 0 and reply and reply.get("payload") == "pong:ping", repr((code, reply, err)))
    code, reply, err = await asyncio.get_running_loop().run_in_executor(None, sb_request, f"{PREFIX}.rr.nobody", "ping")
    check("a request nobody answers fails at once, naming it", code == 1 and "no responders" in err, repr((code, err)))

    # Error replies are NATS micro's: a micro service's error fails a
    # switchboard request, and a failed `reply --command` reaches a plain
    # requester as the micro error headers.
    from nats.micro import add_service

    async def refuse(req):
        await req.respond_error("503", "overloaded, try later")

    service = await add_service(nc, name="interop", version="0.0.1")
    await service.add_endpoint(name="refuse", subject=f"{PREFIX}.rr.micro", handler=refuse)
    await nc.flush()
    code, reply, err = await asyncio.get_running_loop().run_in_executor(None, sb_request, f"{PREFIX}.rr.micro", "ping")
    check("a micro service's error reply fails switchboard request at once", code == 1 and "overloaded, try later (error code 503)" in err, repr((code, err)))
    await service.stop()
    replier = start_replier(f"{PREFIX}.rr.failing", "--command", "exit 3")
    try:
        msg = await nc.request(f"{PREFIX}.rr.failing", b"x", timeout=10)
        hdrs = msg.headers or {}
        check("a failed reply command reaches a plain requester as micro error headers",
              hdrs.get("Nats-Service-Error-Code") == "500" and "exit status: 3" in hdrs.get("Nats-Service-Error", "") and "exit 3" not in hdrs.get("Nats-Service-Error", ""),
              repr(hdrs))
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        check("a failed reply command reaches a plain requester as micro error headers", False, repr(e))
    replier.kill()
    replier.wait(timeout=15)
    await nc.close()


# ---------------------------------------------------------------- Redis
def redis_main():
    import redis

    client = redis.Redis.from_url(URL)
    subject = f"{PREFIX}.to_plain"
    ps = client.pubsub()
    ps.subscribe(subject)
    ps.get_message(timeout=5)  # subscribe confirmation
    r = sb("send", "--on", subject, TEXT)
    check("send exits 0", r.returncode == 0, r.stderr.decode())
    msg = None
    deadline = time.time() + 5
    while msg is None and time.time() < deadline:
        msg = ps.get_message(timeout=1)
    check("no headers -> exactly the bytes sent", msg is not None and msg["data"] == TEXT.encode(), repr(msg))

    listener = start_listener(f"{PREFIX}.from_plain.>", 2)
    binary = bytes(range(256))
    client.publish(f"{PREFIX}.from_plain.a", binary)
    client.publish(f"{PREFIX}.from_plain.b", b"hi")
    got = listener_output(listener)
    check("listen got both", len(got) == 2, repr(got))
    if len(got) == 2:
        import base64
        check("plain binary payload arrives exactly", base64.b64decode(got[0].get("payload_base64", "")) == binary, repr(got[0]))
        check("plain 'hi' arrives as 'hi' without headers", got[1].get("payload") == "hi" and not got[1].get("headers"), repr(got[1]))

    # plain requester -> switchboard reply: the inbox travels in the envelope's
    # switchboard-reply-to header (see switchboard_redis::wire).
    replier = start_replier(f"{PREFIX}.rr.>", "pong")
    inbox = f"_INBOX.{uuid.uuid4().hex}"
    ps = client.pubsub()
    ps.subscribe(inbox)
    ps.get_message(timeout=5)
    receivers = client.publish(f"{PREFIX}.rr.a", b"\0SBH1\nswitchboard-reply-to: " + inbox.encode() + b"\n\nping")
    msg = None
    deadline = time.time() + 10
    while msg is None and time.time() < deadline:
        msg = ps.get_message(timeout=1)
    check("switchboard reply answers a plain client's request", receivers == 1 and msg is not None and msg["data"] == b"pong", repr((receivers, msg)))
    check("reply exits 0 after --count 1", replier_done(replier), "".join(replier.lines))

    # switchboard request -> plain responder
    def respond(subject, answer):
        ps = client.pubsub()
        ps.subscribe(subject)
        ps.get_message(timeout=5)

        def run():
            deadline = time.time() + 10
            while time.time() < deadline:
                msg = ps.get_message(timeout=1)
                if msg and msg["type"] == "message":
                    head, _, payload = msg["data"].partition(b"\n\n")
                    for line in head.split(b"\n")[1:]:
                        name, _, value = line.partition(b": ")
                        if name == b"switchboard-reply-to":
                            client.publish(value.decode(), answer(payload))
                    return

        responder = threading.Thread(target=run, daemon=True)
        responder.start()
        return responder

    responder = respond(f"{PREFIX}.rr.plain", lambda payload: b"pong:" + payload)
    code, reply, err = sb_request(f"{PREFIX}.rr.plain", "ping")
    responder.join(timeout=10)
    check("switchboard request gets a plain responder's reply", code == 0 and reply and reply.get("payload") == "pong:ping", repr((code, reply, err)))
    # An error reply written by hand, as a plain client would: a padded value, CRLF.
    responder = respond(f"{PREFIX}.rr.failing", lambda payload: b"\0SBH1\nNats-Service-Error: disk full \nNats-Service-Error-Code: 507\r\n\n")
    code, reply, err = sb_request(f"{PREFIX}.rr.failing", "ping")
    responder.join(timeout=10)
    check("a plain responder's error reply fails switchboard request", code == 1 and "failed: disk full (error code 507)" in err, repr((code, reply, err)))
    code, reply, err = sb_request(f"{PREFIX}.rr.nobody", "ping")
    check("a request nobody answers fails at once, naming it", code == 1 and "no responders" in err, repr((code, err)))


# ---------------------------------------------------------------- AMQP
def amqp_main():
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    q = ch.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    subject = f"{PREFIX}.to_plain"
    ch.queue_bind(queue=q, exchange="amq.topic", routing_key=subject)
    r = sb("send", "--on", subject, "--header", "severity=high", TEXT)
    check("send exits 0", r.returncode == 0, r.stderr.decode())
    body = None
    deadline = time.time() + 5
    while body is None and time.time() < deadline:
        method, props, body = ch.basic_get(queue=q, auto_ack=True)
        if body is None:
            time.sleep(0.05)
    check("payload byte-for-byte to plain client", body == TEXT.encode(), repr(body))
    headers = (props.headers or {}) if body is not None else {}
    value = headers.get("severity")
    if isinstance(value, bytes):
        value = value.decode()
    check("headers arrive as AMQP headers", value == "high", repr(headers))

    listener = start_listener(f"{PREFIX}.from_plain.>", 2)
    binary = bytes(range(256))
    ch.basic_publish("amq.topic", f"{PREFIX}.from_plain.a", binary, pika.BasicProperties(headers={"k": "v"}))
    ch.basic_publish("amq.topic", f"{PREFIX}.from_plain.b", b"hi")
    got = listener_output(listener)
    check("listen got both", len(got) == 2, repr(got))
    if len(got) == 2:
        import base64
        check("plain binary payload arrives exactly", base64.b64decode(got[0].get("payload_base64", "")) == binary, repr(got[0]))
        check("AMQP headers arrive as headers", got[0].get("headers") == {"k": "v"}, repr(got[0]))
        check("plain 'hi' arrives as 'hi'", got[1].get("payload") == "hi", repr(got[1]))

    # plain RPC client (direct reply-to) -> switchboard reply
    replier = start_replier(f"{PREFIX}.rr.>", "--echo")
    replies = []
    ch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((p, b)), auto_ack=True)
    ch.basic_publish("amq.topic", f"{PREFIX}.rr.a", TEXT.encode(), pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c-1", headers={"k": "v"}))
    deadline = time.time() + 10
    while not replies and time.time() < deadline:
        conn.process_data_events(time_limit=0.2)
    ok = bool(replies) and replies[0][1] == TEXT.encode() and replies[0][0].correlation_id == "c-1"
    check("switchboard reply answers a plain RPC client", ok, repr(replies))
    check("reply exits 0 after --count 1", replier_done(replier), "".join(replier.lines))

    # switchboard request -> plain responder (a queue bound to the subject)
    q = ch.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    ch.queue_bind(queue=q, exchange="amq.topic", routing_key=f"{PREFIX}.rr.plain")

    def respond(c, method, props, body):
        c.basic_publish("", props.reply_to, b"pong:" + body, pika.BasicProperties(correlation_id=props.correlation_id))
        c.basic_ack(method.delivery_tag)

    def ask_while_serving(subject):
        """`switchboard request` in a thread while this connection serves its consumers."""
        result = {}
        asking = threading.Thread(target=lambda: result.update(r=sb_request(subject, "ping")), daemon=True)
        asking.start()
        deadline = time.time() + 15
        while asking.is_alive() and time.time() < deadline:
            conn.process_data_events(time_limit=0.2)
        return result.get("r", (None, None, "no answer"))

    ch.basic_consume(q, respond)
    code, reply, err = ask_while_serving(f"{PREFIX}.rr.plain")
    check("switchboard request gets a plain responder's reply", code == 0 and reply and reply.get("payload") == "pong:ping", repr((code, reply, err)))
    code, reply, err = sb_request(f"{PREFIX}.rr.nobody", "ping")
    check("a request nobody answers fails at once, naming it", code == 1 and "no responders" in err, repr((code, err)))

    # A plain RPC server's error reply, its description ending in a line break
    # as error strings often do.
    failing = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(failing, "amq.topic", routing_key=f"{PREFIX}.rr.failing")

    def refuse(c, method, props, body):
        c.basic_publish("", props.reply_to, b"", pika.BasicProperties(correlation_id=props.correlation_id, headers={"Nats-Service-Error": "database unavailable\n", "Nats-Service-Error-Code": "503"}))
        c.basic_ack(method.delivery_tag)

    ch.basic_consume(failing, refuse)
    code, reply, err = ask_while_serving(f"{PREFIX}.rr.failing")
    check("a plain RPC server's error reply fails switchboard request", code == 1 and "failed: database unavailable (error code 503)" in err, repr((code, reply, err)))
    conn.close()


if BROKER == "nats":
    asyncio.run(nats_main())
elif BROKER == "redis":
    redis_main()
elif BROKER == "amqp":
    amqp_main()
else:
    raise SystemExit(f"unknown broker {BROKER}")

print(f"{passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)

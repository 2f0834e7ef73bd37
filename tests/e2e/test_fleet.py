"""Fleet mode end to end: several processes, real Envoys and `detour serve`, share one
budget kept in one Redis. Envoys lease through `detour state`, `detour serve` talks to
Redis itself; every process spends only what it leased and reports its spend back on
its sync tick (configs/fleet*.yaml: sync every 200 ms, leases live 10 s).

Each test starts its own Redis, state service, mock provider and fleet, on free ports,
and stops every one of them by PID (ExitStack, also on failure). The fleet is mixed, so
both hosts run every scenario against the same ledger.

What is exact here: every answer costs $0.001 (5 completion tokens at $0.0002, prompt
tokens free) and is estimated at exactly that, so the recorded spend must equal the
number of answers × $0.001 to the nano-dollar, and the documented overspend bound
(cost beyond estimate of what is in flight) is 0."""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from conftest import CONFIGS, chat, selected_hosts
from harness import DetourServe, EnvoyWithDetour, MockProvider, new_workdir, remove_workdir
from harness.fleet import DetourState, RedisServer, redis_binary

pytestmark = pytest.mark.skipif(redis_binary() is None, reason="redis-server not installed (scripts/bootstrap.sh)")

NANOS = 1_000_000_000
#: The mock's 5 completion tokens at $0.0002 (prompt tokens are free): $0.001.
ANSWER_NANOS = 5 * 200_000
#: max_tokens 5: the estimate is 5 completion tokens, the answer's exact cost.
BODY = chat("fleet", "hi", max_tokens=5)
DEPLOYMENT = "fleet-a"
NS = "{detour}"
LEASE_TTL_S = 10.0
SYNC_S = 0.2
CONCURRENCY = 32

# Reads one scope's account and every hold still in the `held` set, in one step (a
# script runs alone in Redis): the ledger cannot move between the two reads.
SNAPSHOT_LUA = """
local acct = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
local out = {acct[1] or '0', acct[2] or '0'}
local ids = redis.call('ZRANGE', ARGV[1] .. 'held', 0, -1, 'WITHSCORES')
for i = 1, #ids, 2 do
  local f = redis.call('HMGET', ARGV[1] .. 'hold:' .. ids[i], 'state', 'amount')
  table.insert(out, ids[i])
  table.insert(out, f[1] or '')
  table.insert(out, f[2] or '0')
  table.insert(out, ids[i + 1])
end
return out
"""


def month_start_ms(now: datetime | None = None) -> int:
    now = now or datetime.now(timezone.utc)
    return int(datetime(now.year, now.month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def total_scope() -> str:
    """The total budget's key in the ledger: monthly, period start in UTC ms."""
    return f"budget/total/{month_start_ms()}"


@dataclass
class Ledger:
    """One consistent look at the ledger: the total's account and the live holds."""

    spent: int
    reserved: int
    #: lease id → (state, amount) of every hold still in the `held` set.
    holds: dict[str, tuple[str, int]]
    #: lease id → when the ledger takes it back (ms).
    expires: dict[str, int]

    def held_by(self, holder: str) -> int:
        return sum(amount for lease, (state, amount) in self.holds.items() if state == "held" and holder_of(lease) == holder)

    @property
    def held_total(self) -> int:
        return sum(amount for state, amount in self.holds.values() if state == "held")

    @property
    def holders(self) -> set[str]:
        return {holder_of(lease) for lease, (state, _) in self.holds.items() if state == "held"}


def holder_of(lease_id: str) -> str:
    # lease/<holder>/<n>
    return lease_id.split("/")[1]


def snapshot(redis: RedisServer) -> Ledger:
    flat = redis.command("EVAL", SNAPSHOT_LUA, "1", f"{NS}:acct:{total_scope()}", f"{NS}:")
    holds = {flat[i]: (flat[i + 1], int(flat[i + 2])) for i in range(2, len(flat), 4)}
    expires = {flat[i]: int(flat[i + 3]) for i in range(2, len(flat), 4)}
    return Ledger(int(flat[0]), int(flat[1]), holds, expires)


@dataclass
class Answer:
    proc: str
    status: int | None  # None: no HTTP answer (connection refused or reset)
    code: str | None  # the error's `code` of a non-2xx answer
    seconds: float
    message: str = ""  # the error's `message` of a non-2xx answer


def send(targets, n: int, concurrency: int = CONCURRENCY, on_answer=None) -> list[Answer]:
    """`n` chat requests, `concurrency` at a time; request i goes to `targets(i)`, a
    (name, base URL) pair chosen when it is sent. Fresh connections per request."""

    async def run() -> list[Answer]:
        gate = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def one(i: int) -> Answer:
                async with gate:
                    name, url = targets(i)
                    started = time.monotonic()
                    try:
                        resp = await client.post(f"{url}/v1/chat/completions", json=BODY)
                    except httpx.TransportError:
                        answer = Answer(name, None, None, time.monotonic() - started)
                    else:
                        code, message = None, ""
                        if resp.status_code != 200:
                            try:
                                code = resp.json()["error"]["code"]
                                message = resp.json()["error"].get("message", "")
                            except Exception:  # noqa: BLE001 - a crash's body is not JSON
                                code = resp.text[:200]
                        answer = Answer(name, resp.status_code, code, time.monotonic() - started, message)
                    if on_answer is not None:
                        on_answer(answer)
                    return answer

            return await asyncio.gather(*(one(i) for i in range(n)))

    return asyncio.run(run())


def round_robin(procs):
    return lambda i: (procs[i % len(procs)].label, procs[i % len(procs)].url)


def served(answers: list[Answer], proc: str | None = None) -> int:
    return sum(1 for a in answers if a.status == 200 and (proc is None or a.proc == proc))


def summary(answers: list[Answer]) -> dict:
    out: dict = {}
    for a in answers:
        key = f"{a.status}:{a.code}" if a.code else str(a.status)
        out[key] = out.get(key, 0) + 1
    return out


BUDGET_REFUSAL = (402, "budget_exceeded")
LEDGER_DOWN = (503, "budget_ledger_unreachable")


def assert_only_budget_refusals(answers: list[Answer], also=()) -> None:
    """Every answer is a success or detour's budget refusal (or one of `also`): no other
    5xx, no crash."""
    allowed = {BUDGET_REFUSAL, *also}
    bad = [a for a in answers if a.status != 200 and (a.status, a.code) not in allowed]
    assert not bad, summary(bad)


def counter(proc, name: str) -> float:
    """A label-less counter of the filter from the host's Prometheus endpoint (0 when absent)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{proc.admin_port}/stats/prometheus", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? ", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout} s (last: {last!r})")


def flushed(redis: RedisServer, expect_spent: int, timeout: float = 10.0) -> Ledger:
    """Waits until the ledger's spend reaches `expect_spent` and stays there for five
    sync intervals (every process has reported, nothing more arrives), or until the
    spend stops moving for 2 s; returns the last look either way."""
    deadline = time.monotonic() + timeout
    last = snapshot(redis)
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(SYNC_S / 2)
        now = snapshot(redis)
        if now.spent != last.spent:
            still_since = time.monotonic()
        last = now
        quiet = time.monotonic() - still_since
        if (now.spent == expect_spent and quiet >= 5 * SYNC_S) or quiet >= 2.0:
            return now
    return last


class Fleet:
    """The processes of one test: mock, Redis, state service and the fleet's proxies,
    each stopped by PID when the test ends (pass or fail)."""

    def __init__(self, stack: ExitStack, workdir: Path, config: str, durable_redis: bool = False):
        self.stack = stack
        self.workdir = workdir
        self.mock = MockProvider(workdir).start()
        stack.callback(self.mock.stop)
        self.redis = RedisServer(workdir / "redis", durable=durable_redis).start()
        stack.callback(lambda: self.redis.stop())
        self.state = DetourState(workdir / "state", self.redis.url).start()
        stack.callback(self.state.stop)
        self.config = (
            (CONFIGS / config).read_text()
            .replace("${MOCK}", self.mock.url)
            .replace("${STATE}", self.state.url)
            .replace("${REDIS}", self.redis.url)
        )
        self.procs: list = []
        #: proc label → its holder id in the ledger (lease ids are lease/<holder>/<n>).
        self.holder: dict[str, str] = {}
        #: Answers to warm-up requests, if any process needed one (see `add`).
        self.warmup: list[Answer] = []

    def add(self, kind: str, label: str):
        """Starts one proxy of the fleet and learns its holder id: a new process leases
        on its first sync round, so the holder that appears in the ledger is its own.
        Should a process ever stop leasing before traffic, one warm-up request makes it
        lease (kept in `warmup`: the tests count its cost with the rest)."""
        (self.workdir / label).mkdir()
        cls = EnvoyWithDetour if kind == "envoy" else DetourServe
        proc = cls(self.workdir / label, self.config)
        proc.label = label
        known = set(self.holder.values())
        self.stack.callback(proc.stop)
        proc.start()
        self.procs.append(proc)
        try:
            fresh = wait_until(lambda: self.holders_ever() - known, 3, f"{label}'s first lease")
        except AssertionError:
            self.warmup += send(lambda i: (label, proc.url), 1)
            fresh = wait_until(lambda: self.holders_ever() - known, 5, f"{label}'s first lease")
        assert len(fresh) == 1, fresh
        self.holder[label] = fresh.pop()
        return proc

    def holders_ever(self) -> set[str]:
        """Every holder that took a lease (held, returned or expired: records live 1 h)."""
        prefix = f"{NS}:hold:"
        return {holder_of(key[len(prefix):]) for key in self.redis.command("KEYS", f"{prefix}lease/*")}

    def events(self, proc, kind: str) -> list[dict]:
        return [e for e in proc.events() if e["event"] == kind]


def start_fleet(fleet: Fleet, n: int) -> list:
    """`n` proxies: Envoys and, last, one `detour serve` (both hosts on one ledger); only
    one host's kind when DETOUR_E2E_HOSTS selects one."""
    hosts = selected_hosts()
    kinds = ["envoy"] * (n - 1) + ["serve"] if len(hosts) > 1 else hosts * n
    return [fleet.add(kind, f"{kind}{i}") for i, kind in enumerate(kinds)]


@pytest.fixture
def fleet_dir():
    path = new_workdir("fleet-")
    yield path
    remove_workdir(path)


def test_one_budget_across_three_envoys_and_a_serve_is_spent_exactly(fleet_dir):
    """600 requests against a fleet budget for 200, over 3 Envoys and 1 `detour serve`."""
    limit = int(0.2 * NANOS)
    fits = limit // ANSWER_NANOS  # 200
    with ExitStack() as stack:
        fleet = Fleet(stack, fleet_dir, "fleet.yaml")
        procs = start_fleet(fleet, 4)
        assert snapshot(fleet.redis).spent == 0

        started = time.monotonic()
        answers = fleet.warmup + send(round_robin(procs), 600)
        took = time.monotonic() - started

        n_ok = served(answers)
        ledger = flushed(fleet.redis, n_ok * ANSWER_NANOS)
        per_proc = {p.label: served(answers, p.label) for p in procs}
        slowest_refusal = max((a.seconds for a in answers if a.status == 402), default=0.0)
        print(
            f"\nfleet budget: {n_ok} served of 600 ({per_proc}), answers {summary(answers)}, "
            f"{took:.1f} s, slowest refusal {slowest_refusal:.2f} s; ledger spent {ledger.spent} "
            f"reserved {ledger.reserved} (limit {limit}), live holds {len(ledger.holds)}"
        )

        # Only successes and budget refusals: nothing crashed, nothing answered 5xx.
        assert_only_budget_refusals(answers)
        # Every answer the clients got is one the provider served, and nothing else.
        assert len(fleet.mock.requests(DEPLOYMENT)) == n_ok
        # Every process reported all of its spend, once: the ledger's spend is the cost of
        # the answers, to the nano-dollar.
        assert ledger.spent == n_ok * ANSWER_NANOS
        # The state service answers the same account.
        via_api = fleet.state.account(total_scope())
        assert via_api["spent_nanos"] == ledger.spent
        # Estimates equal costs: the bound on overspend is 0, so spend stays in the budget.
        assert ledger.spent <= limit
        assert ledger.spent + ledger.reserved <= limit
        # What is still reserved is what live leases hold, nothing else (no estimate left
        # behind by a request).
        assert ledger.reserved == ledger.held_total
        # The end of the budget was reached, not refused early: at least 90 % of it.
        assert n_ok >= 0.9 * fits, (n_ok, fits)
        # Every process of the fleet took part (the budget is the fleet's, not one's).
        assert all(per_proc.values()), per_proc
        # No process saw the ledger as unreachable in a healthy run.
        for proc in procs:
            assert fleet.events(proc, "fleet_unreachable") == [], proc.label


def test_redis_crash_and_restart_loses_and_double_counts_nothing(fleet_dir):
    """Redis is killed (SIGKILL) between two bursts and restarted on the same port with
    its data (AOF, fsync on every write). With `on_unreachable: {budgets: closed}`,
    only the leases held at the crash are spent meanwhile; the rest is refused."""
    limit = int(0.2 * NANOS)
    with ExitStack() as stack:
        fleet = Fleet(stack, fleet_dir, "fleet.yaml", durable_redis=True)
        procs = start_fleet(fleet, 3)

        before = fleet.warmup + send(round_robin(procs), 60)
        n_before = served(before)
        assert n_before == len(before), summary(before)
        assert flushed(fleet.redis, n_before * ANSWER_NANOS).spent == n_before * ANSWER_NANOS

        fleet.redis.crash()
        crashed_at = time.monotonic()
        # What the ledger held at the crash, read from a copy of its files (the real one
        # must not run before the outage is over).
        at_crash = inspect_copy(fleet.redis, fleet_dir / "inspect")
        assert at_crash.spent == n_before * ANSWER_NANOS

        during = send(round_robin(procs), 150)
        for proc in procs:
            wait_until(lambda: fleet.events(proc, "fleet_unreachable"), 5, f"{proc.label}: fleet_unreachable")
        n_during = served(during)

        fleet.redis.start()  # same port, same files
        restarted_at = time.monotonic()
        for proc in procs:
            wait_until(lambda: fleet.events(proc, "fleet_recovered"), 10, f"{proc.label}: fleet_recovered")
        recovered_in = time.monotonic() - restarted_at
        outage = [fleet.events(p, "fleet_recovered")[-1]["outage_ms"] for p in procs]

        after = send(round_robin(procs), 30)
        answers = before + during + after
        n_ok = served(answers)
        ledger = flushed(fleet.redis, n_ok * ANSWER_NANOS)
        print(
            f"\nredis crash: before {summary(before)}, during {summary(during)} "
            f"(lease room held at the crash {at_crash.reserved} = {at_crash.reserved // ANSWER_NANOS} answers), "
            f"after {summary(after)}; outage {restarted_at - crashed_at:.1f} s, all recovered "
            f"{recovered_in:.1f} s after the restart, outage_ms {outage}; ledger spent {ledger.spent} "
            f"reserved {ledger.reserved}; a refusal during the outage: "
            f"{next((a.message for a in during if a.status != 200), None)!r}"
        )

        # During the outage a request its process's leases do not cover is refused at
        # once as a server-side outage (503 with Retry-After), not as an empty budget.
        assert_only_budget_refusals(answers, also=[LEDGER_DOWN])
        assert any((a.status, a.code) == LEDGER_DOWN for a in during), summary(during)
        # Closed: only what the leases held at the crash was spent during the outage ...
        assert n_during * ANSWER_NANOS <= at_crash.reserved
        # ... and the rest was refused (150 requests need more than the leases held).
        assert served(during) < 150
        for proc in procs:
            unreachable = fleet.events(proc, "fleet_unreachable")
            assert unreachable[0]["budgets"] == "closed"
        # After the restart the fleet serves again.
        assert served(after) == 30, summary(after)
        # Nothing lost, nothing counted twice: the spend made during the outage reached
        # the ledger once it was back.
        assert len(fleet.mock.requests(DEPLOYMENT)) == n_ok
        assert ledger.spent == n_ok * ANSWER_NANOS
        assert ledger.reserved == ledger.held_total
        assert ledger.spent + ledger.reserved <= limit
        # Metrics: each process counted the outage and the recovery.
        for proc in procs:
            assert counter(proc, "detour_fleet_outages_total") >= 1, proc.label
            assert counter(proc, "detour_fleet_recoveries_total") >= 1, proc.label


def inspect_copy(redis: RedisServer, workdir: Path) -> Ledger:
    """The ledger as a stopped durable Redis left it: its AOF files copied and loaded by
    a throwaway redis-server on another port."""
    workdir.mkdir()
    shutil.copytree(redis.workdir / "appendonlydir", workdir / "appendonlydir")
    copy = RedisServer(workdir, durable=True).start()
    try:
        return snapshot(copy)
    finally:
        copy.stop()


def test_an_envoy_killed_mid_run_loses_at_most_its_unreported_spend(fleet_dir):
    """One Envoy of four processes is SIGKILLed while traffic flows: the others keep
    serving, its leases come back to the fleet after lease_ttl, and what it had not yet
    reported is all the ledger misses."""
    limit = int(1.0 * NANOS)  # room for 1,000 answers: the budget is not the limit here
    total = 400
    kill_after = 150
    with ExitStack() as stack:
        fleet = Fleet(stack, fleet_dir, "fleet_large.yaml")
        # Answers take 200 ms: the run lasts a few sync rounds, so the victim has reported
        # some of its spend when it dies, and dies with answers in flight.
        fleet.mock.script(DEPLOYMENT, [], default={"delay_ms": 200})
        procs = start_fleet(fleet, 4)
        victim = procs[0]
        survivors = procs[1:]
        dead = fleet.holder[victim.label]

        killed = threading.Event()
        killed_at: list[float] = []  # wall clock, ms (the ledger's clock)
        done = []
        lock = threading.Lock()

        def on_answer(answer: Answer) -> None:
            with lock:
                done.append(answer)
                due = len(done) >= kill_after and not killed.is_set()
                if due:
                    killed.set()
            if due:
                victim.proc.kill()  # SIGKILL, by PID
                victim.proc.wait(timeout=10)
                killed_at.append(time.time() * 1000)

        def targets(i: int):
            alive = survivors if killed.is_set() else procs
            proc = alive[i % len(alive)]
            return proc.label, proc.url

        run_started = time.time() * 1000
        answers = fleet.warmup + send(targets, total, on_answer=on_answer)
        assert killed.is_set() and killed_at
        kill_s = (killed_at[0] - run_started) / 1000
        assert victim.proc.poll() is not None
        run_ended = time.time() * 1000 - killed_at[0]

        # What the victim held when it died: its leases are still held in the ledger.
        at_kill = snapshot(fleet.redis)
        dead_leases = {lease: at_kill.expires[lease] for lease, (state, _) in at_kill.holds.items() if state == "held" and holder_of(lease) == dead}
        dead_grant = at_kill.held_by(dead)
        assert dead_leases, at_kill
        # Each expires lease_ttl after it was granted, which was before the kill; the
        # newest was taken in the sync round or two before it (the victim was busy).
        last_expiry = max(dead_leases.values())
        assert last_expiry <= killed_at[0] + LEASE_TTL_S * 1000 + 100
        assert last_expiry >= killed_at[0] + (LEASE_TTL_S - 2) * 1000

        # Past the expiry, the survivors keep serving. Expiry is done at the head of every
        # ledger script (no reaper process): their lease calls give the room back.
        wait_until(lambda: time.time() * 1000 > last_expiry + 100, LEASE_TTL_S + 2, "the victim's leases' expiry")
        stale = snapshot(fleet.redis)
        later = send(round_robin(survivors), 40)
        answers += later

        n_ok = served(answers)
        victim_ok = served(answers, victim.label)
        survivors_ok = n_ok - victim_ok
        ledger = flushed(fleet.redis, survivors_ok * ANSWER_NANOS)
        states = {lease: fleet.redis.command("HGET", f"{NS}:hold:{lease}", "state") for lease in dead_leases}
        print(
            f"\nenvoy killed after {kill_after} answers ({kill_s:.2f} s into the run): {summary(answers)}; served by the victim {victim_ok}, "
            f"by the survivors {survivors_ok} ({ {p.label: served(answers, p.label) for p in survivors} }); "
            f"the run ended {run_ended / 1000:.1f} s after the kill; the victim held {dead_grant} in "
            f"{len(dead_leases)} lease(s), expiring {(last_expiry - killed_at[0]) / 1000:.2f} s after the kill; "
            f"just past it the ledger still said reserved {stale.reserved} (victim's {stale.held_by(dead)}); "
            f"after the survivors' next calls: leases {states}, ledger spent {ledger.spent} (the victim's "
            f"unreported spend, lost: {n_ok * ANSWER_NANOS - ledger.spent}) reserved {ledger.reserved} = "
            f"live holds {ledger.held_total}"
        )

        # The survivors kept serving: everything sent to them was served.
        to_survivors = [a for a in answers if a.proc != victim.label]
        assert all(a.status == 200 for a in to_survivors), summary(to_survivors)
        # Only requests caught at the victim when it died went unanswered.
        assert all(a.status == 200 or (a.status is None and a.proc == victim.label) for a in answers), summary(answers)
        # Its leases came back (expired, not returned: nobody reported under them) ...
        assert set(states.values()) == {"expired"}, states
        assert dead not in ledger.holders
        # ... and what is reserved is exactly what the live processes hold.
        assert ledger.reserved == ledger.held_total
        assert ledger.holders <= {fleet.holder[p.label] for p in survivors}
        # At most its unreported spend is lost; nothing is counted twice.
        assert survivors_ok * ANSWER_NANOS <= ledger.spent <= n_ok * ANSWER_NANOS
        # And it had reported along the way (a busy process reports every sync round or
        # two; it was busy for several before it died).
        assert ledger.spent > survivors_ok * ANSWER_NANOS
        assert ledger.spent % ANSWER_NANOS == 0
        assert ledger.spent + ledger.reserved <= limit
        # The provider served every answer the clients got (and perhaps some the victim
        # never delivered).
        assert len(fleet.mock.requests(DEPLOYMENT)) >= n_ok


def test_rpm_is_one_limit_for_the_whole_fleet(fleet_dir):
    """160 requests within one minute over 3 Envoys and 1 `detour serve` against an rpm
    of 40: the fleet admits at most 40 in the minute (each process alone would admit 40),
    all but the last few, and the ledger counted exactly the requests sent."""
    rpm = 40
    with ExitStack() as stack:
        fleet = Fleet(stack, fleet_dir, "fleet_rpm.yaml")
        # Stay inside one calendar minute (the fleet counts calendar minutes).
        into = time.time() % 60
        if into > 40:
            time.sleep(61 - into)
        procs = start_fleet(fleet, 4)
        minute = int(time.time() // 60) * 60_000
        answers = fleet.warmup + send(round_robin(procs), 160)
        assert int(time.time() // 60) * 60_000 == minute, "the run crossed a minute boundary"
        n_ok = served(answers)
        key = f"{NS}:acct:rate/fleet/openai/fleet-1/rpm/{minute}"
        counted = wait_until(
            lambda: (lambda v: v if v == n_ok else None)(int(fleet.redis.command("HGET", key, "spent") or 0)),
            10,
            "the fleet's rpm count to reach the requests sent",
        )
        print(f"\nfleet rpm {rpm}: {summary(answers)}; ledger counted {counted}")
        # Refusals are rate limits (429 with Retry-After), nothing else.
        bad = [a for a in answers if a.status != 200 and (a.status, a.code) != (429, "all_deployments_rate_limited")]
        assert not bad, summary(bad)
        # One limit for the fleet, reached but never passed.
        assert rpm - 4 <= n_ok <= rpm, summary(answers)
        assert len(fleet.mock.requests(DEPLOYMENT)) == n_ok

"""The yardstick for `make bench`: the script an admin would write without bulkusers.

32 threads, one `requests.Session` each (kept-alive connection), GET with select=$all,
apply the row's `maxChats` and `skillIds:add` to the entity, PUT it with If-Match. No rate
cap, no retries, no results file: the least work a correct GET-merge-PUT can do in Python.

    python -m bulkusers.bench_baseline --base-url URL --account 123 CHANGES.csv

prints one JSON line: {"rows", "updated", "statuses", "elapsed", "updates_per_s"}.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

DEFAULT_THREADS = 32
_USERS_PATH = "/api/account/{account}/configuration/le-users/users"


class _Script:
    """One baseline run: a session per thread, one GET-merge-PUT per row."""

    def __init__(self, base_url: str, account: str) -> None:
        self._root = base_url.rstrip("/") + _USERS_PATH.format(account=account)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1))
            self._local.session = session
        return session

    def update(self, row: dict[str, str]) -> int:
        """GET, merge the row, PUT with If-Match; the PUT's status (or the failed GET's; 0 when
        the connection failed)."""
        try:
            return self._update(row)
        except requests.RequestException:
            return 0

    def _update(self, row: dict[str, str]) -> int:
        session = self._session()
        url = f"{self._root}/{row['id']}"
        got = session.get(url, params={"v": "4.0", "select": "$all"}, timeout=30)
        if got.status_code != 200:
            return got.status_code
        user = got.json()
        if row.get("maxChats"):
            user["maxChats"] = int(row["maxChats"])
        if row.get("skillIds:add"):
            skills = user.get("skillIds") or []
            for member in row["skillIds:add"].split("|"):
                if int(member) not in skills:
                    skills.append(int(member))
            user["skillIds"] = skills
        put = session.put(
            url,
            params={"v": "4.0"},
            json=user,
            headers={"If-Match": got.headers["ac-revision"]},
            timeout=30,
        )
        return put.status_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bulkusers.bench_baseline")
    parser.add_argument("changes", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--account", default="123")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args(argv)
    with args.changes.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    script = _Script(args.base_url, args.account)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        statuses = collections.Counter(pool.map(script.update, rows))
    elapsed = time.perf_counter() - started
    updated = statuses.get(200, 0)
    report = {
        "rows": len(rows),
        "updated": updated,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "elapsed": round(elapsed, 3),
        "updates_per_s": round(updated / elapsed, 1) if elapsed > 0 else 0.0,
    }
    print(json.dumps(report), flush=True)
    return 0 if updated == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

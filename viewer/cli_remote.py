"""`lightbox remote ...`: find, retrieve and send over DICOMweb or DIMSE; and `analyze --send`.

SERVER is a configured server's name (`remote add`) or an address: http(s)://[user@]host/path for
DICOMweb, dicom://AET@host:port for DIMSE. Passwords and tokens come from the OS keyring (stored by
`remote add --password`), LIGHTBOX_REMOTE_PASSWORD / LIGHTBOX_REMOTE_TOKEN, or a prompt on a
terminal; never from the command line, where they would land in shell history.

Every failure of a server (unreachable, refused association, bad credentials, no such study) is
exit 2 with one line on stderr.
"""
from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def _say(msg: str) -> None:
    print(f"lightbox: {msg}", file=sys.stderr, flush=True)


def _server(args):
    """The Server for args.server, with --user/--bearer/--insecure/--ca-bundle/--calling-ae applied."""
    from .remote.servers import resolve

    server = resolve(args.server)
    if getattr(args, "user", None):
        server.username, server.auth = args.user, "basic"
    if getattr(args, "bearer", False):
        server.auth = "bearer"
    if getattr(args, "insecure", False):
        server.verify_tls = False
    if getattr(args, "ca_bundle", None):
        server.ca_bundle = args.ca_bundle
    if getattr(args, "calling_ae", None):
        server.calling_ae = args.calling_ae
    if getattr(args, "timeout", None):
        server.timeout = float(args.timeout)
    return server


def client_for(args, server=None):
    from .remote import connect
    from .remote.servers import get_secret

    server = server or _server(args)
    secret = get_secret(server)
    if server.auth != "none" and not secret and sys.stdin.isatty():
        what = "token" if server.auth == "bearer" else f"password for {server.username}"
        secret = getpass.getpass(f"{what} at {server.address}: ")
    return connect(server, secret)


def _query(args):
    from .remote import Query, parse_dates

    date_from, date_to = parse_dates(args.date) if args.date else ("", "")
    return Query(patient_name=args.patient or "", patient_id=args.patient_id or "", date_from=date_from,
                 date_to=date_to, modality=(args.modality or "").upper(), accession=args.accession or "",
                 study_uid=args.study or "", limit=args.limit)


def cmd_find(args) -> int:
    client = client_for(args)
    studies = client.find_studies(_query(args))
    out = []
    for hit in studies:
        entry = hit.to_json()
        if args.series:
            entry["series"] = [s.to_json() for s in client.find_series(hit.study_uid)]
        out.append(entry)
    if args.json:
        print(json.dumps({"server": client.server.address, "studies": out}, indent=2))
        return 0
    if not out:
        _say(f"no study at {client.server.address} matches")
        return 0
    for entry in out:
        mods = "/".join(entry["modalities"]) or "?"
        counts = f"{entry['n_series'] if entry['n_series'] is not None else '?'} series, " \
                 f"{entry['n_instances'] if entry['n_instances'] is not None else '?'} images"
        d = entry["study_date"] or ""
        date = f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else (d or "----------")
        name = entry["patient_name"].replace("^", " ").strip() or "(no name)"
        print(f"{date}  {mods:8s} {name} "
              f"[{entry['patient_id']}]  {entry['description']}  ({counts})")
        print(f"    study {entry['study_uid']}")
        for s in entry.get("series", []):
            print(f"    series {s['series_uid']}  {s['modality']} #{s['number'] if s['number'] is not None else '?'} "
                  f"{s['description']}  ({s['n_instances'] if s['n_instances'] is not None else '?'} images)")
    return 0


def cmd_get(args) -> int:
    from .remote.cache import RetrieveCache

    client = client_for(args)
    cache = RetrieveCache(Path(args.dir))
    last = [-1]

    def progress(done: int, total: int, message: str) -> None:
        step = max(1, total // 20)
        if done == total or done - last[0] >= step:
            last[0] = done
            _say(f"{done}/{total} instances")

    report = cache.retrieve(client, args.study, args.series, progress=progress if not args.quiet else None)
    summary = {"server": client.server.address, "study_uid": args.study, "folder": str(report.folder),
               "series": report.series, "files": len(report.files), "fetched": report.fetched,
               "reused": report.reused, "missing": report.missing, "seconds": round(report.seconds, 3)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _say(f"{len(report.files)} files in {report.folder} ({report.fetched} fetched, {report.reused} already "
             f"there) in {report.seconds:.1f} s")
    if report.missing:
        _say("the server listed instances it did not send: "
             + ", ".join(f"{uid}: {n}" for uid, n in report.missing.items()))
        return EXIT_BAD_INPUT
    return 0


def cmd_echo(args) -> int:
    client = client_for(args)
    client.echo()
    print(f"{client.server.address}: OK")
    return 0


def cmd_send(args) -> int:
    files = dicom_files(args.paths)
    if not files:
        _say("nothing to send: no DICOM files given")
        return EXIT_BAD_INPUT
    client = client_for(args)
    report = send(client, files)
    return 0 if not report.failed else EXIT_BAD_INPUT


def cmd_add(args) -> int:
    from .remote import parse_address
    from .remote.servers import ServerStore, set_secret

    server = parse_address(args.url, name=args.name)
    if args.user:
        server.username, server.auth = args.user, "basic"
    if args.bearer:
        server.auth = "bearer"
    if args.insecure:
        server.verify_tls = False
    if args.ca_bundle:
        server.ca_bundle = args.ca_bundle
    ServerStore().put(server)
    if args.password:
        what = "token" if server.auth == "bearer" else f"password for {server.username}"
        secret = getpass.getpass(f"{what} at {server.address}: ")
        if set_secret(server, secret):
            _say("kept in the OS keyring")
        else:
            _say("no OS keyring here: not saved; give it with LIGHTBOX_REMOTE_PASSWORD/TOKEN or at the prompt")
    _say(f"added {server.name}: {server.address}")
    return 0


def cmd_list(args) -> int:
    from .remote.servers import ServerStore

    servers = ServerStore().load()
    if args.json:
        print(json.dumps([s.to_json() for s in servers], indent=2))
    for s in servers if not args.json else []:
        auth = f" ({s.auth} as {s.username})" if s.auth == "basic" else f" ({s.auth})" if s.auth != "none" else ""
        print(f"{s.name}: {s.address}{auth}{'' if s.verify_tls else '  TLS NOT VERIFIED'}")
    return 0


def cmd_remove(args) -> int:
    from .remote.servers import ServerStore, forget_secret

    store = ServerStore()
    server = store.get(args.name)
    if server is None:
        _say(f"no server named {args.name!r}")
        return EXIT_BAD_INPUT
    forget_secret(server)
    store.remove(args.name)
    return 0


# -- sending results -----------------------------------------------------------------------
def dicom_files(paths) -> list[Path]:
    """The DICOM files among ``paths`` (folders searched recursively; results.json's listed files)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*.dcm") if f.is_file() and not f.name.startswith(".")))
        elif p.is_file():
            out.append(p)
    return out


def result_files(results_json: Path) -> list[Path]:
    """The DICOM objects one analysis wrote (SEG, Parametric Maps, SR), from its results.json."""
    data = json.loads(results_json.read_text(encoding="utf-8"))
    rels = []
    for res in data.get("results", []):
        for sr in res.get("series", {}).values():
            rels.extend((sr.get("files") or {}).values())
        if res.get("report"):
            rels.append(res["report"])
    root = results_json.parent.resolve()
    files = []
    for rel in rels:
        path = (root / rel).resolve()
        if path.suffix == ".dcm" and path.is_relative_to(root) and path.is_file():
            files.append(path)
    return files


def send(client, files: list[Path]):
    """Store ``files``, saying how it went on stderr; the StoreReport."""
    last = [-1]

    def progress(done: int, total: int, message: str) -> None:
        if done == total or done - last[0] >= max(1, total // 10):
            last[0] = done
            _say(f"sent {done}/{total}")

    report = client.store(files, progress=progress)
    _say(f"{client.server.address}: stored {len(report.stored)} of {len(files)} objects")
    for what, why in report.failed.items():
        _say(f"not stored: {what}: {why}")
    return report


def connection_options(p, auth: bool = True) -> None:
    if auth:
        p.add_argument("--user", help="user name for HTTP basic auth (password: keyring, LIGHTBOX_REMOTE_PASSWORD "
                                      "or a prompt)")
        p.add_argument("--bearer", action="store_true", help="send a bearer token (LIGHTBOX_REMOTE_TOKEN or keyring)")
    p.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")
    p.add_argument("--ca-bundle", metavar="PEM", help="extra trusted certificate authorities")
    p.add_argument("--calling-ae", metavar="AET", help="our AE title for DIMSE (default LIGHTBOX)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per network operation (default 30)")


def add_parser(sub) -> None:
    remote = sub.add_parser("remote", help="PACS: find, get and send studies over DICOMweb or DIMSE")
    rsub = remote.add_subparsers(dest="remote_command", required=True)

    p = rsub.add_parser("find", help="search studies")
    p.add_argument("server", help="a configured server's name, http(s)://host/dicom-web or dicom://AET@host:port")
    p.add_argument("--patient", help="patient name (wildcards * and ?)")
    p.add_argument("--patient-id")
    p.add_argument("--modality")
    p.add_argument("--date", help="YYYYMMDD, or a range FROM-TO, FROM-, -TO")
    p.add_argument("--accession")
    p.add_argument("--study", help="a study instance UID")
    p.add_argument("--series", action="store_true", help="also list each study's series")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    connection_options(p)
    p.set_defaults(func=cmd_find)

    p = rsub.add_parser("get", help="retrieve a study or series into DIR (resumes: only what is missing is fetched)")
    p.add_argument("server")
    p.add_argument("--study", required=True, metavar="UID")
    p.add_argument("--series", default=None, metavar="UID")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    connection_options(p)
    p.set_defaults(func=cmd_get)

    p = rsub.add_parser("send", help="store DICOM files (or every .dcm under folders) on the server")
    p.add_argument("server")
    p.add_argument("paths", nargs="+")
    connection_options(p)
    p.set_defaults(func=cmd_send)

    p = rsub.add_parser("echo", help="check the server answers and accepts us")
    p.add_argument("server")
    connection_options(p)
    p.set_defaults(func=cmd_echo)

    p = rsub.add_parser("add", help="remember a server by name (password or token in the OS keyring)")
    p.add_argument("name")
    p.add_argument("url")
    p.add_argument("--user")
    p.add_argument("--bearer", action="store_true")
    p.add_argument("--password", action="store_true", help="ask for the password/token and keep it in the keyring")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--ca-bundle", metavar="PEM")
    p.set_defaults(func=cmd_add)

    p = rsub.add_parser("list", help="the configured servers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = rsub.add_parser("remove", help="forget a configured server and its secret")
    p.add_argument("name")
    p.set_defaults(func=cmd_remove)

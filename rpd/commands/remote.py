"""`rpd serve-teacher` and `rpd connect-teacher`: a teacher behind a policy server."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("serve-teacher")
@click.argument("teacher_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; then set an --api-key).")
@click.option("--port", type=int, default=8000, show_default=True,
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--api-key", envvar="RPD_API_KEY", show_envvar=True, default=None,
              help="Refuse clients that do not send this key (openpi's Authorization: "
                   "Api-Key header). Prefer the environment variable: it stays out of shell "
                   "history.")
@click.option("--max-batch", type=int, default=256, show_default=True,
              help="Rows one request may hold; bounds the message size (that many images at "
                   "the teacher's camera size).")
@click.option("--max-connections", type=int, default=16, show_default=True,
              help="Clients served at once (one per cache worker or training run); more are "
                   "told to retry.")
@click.option("--threads", type=int, default=None,
              help="torch threads [default: one per core]; 1 on a busy machine.")
def serve_teacher_cmd(teacher_dir: Path, host: str, port: int, api_key: str | None,
                      max_batch: int, max_connections: int, threads: int | None) -> None:
    """Serve a teacher checkpoint over openpi's WebSocket policy protocol until Ctrl-C.

    Requests are answered one at a time, each as one batched call on the batch its
    client sent (see README "Remote teachers").
    """
    from rpd.errors import InputError
    from rpd.teachers.remote import exposure_warning, open_server

    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: must be 0-65535")
    if threads is not None:
        if threads <= 0:
            raise InputError(f"--threads {threads}: must be a positive number")
        import torch

        torch.set_num_threads(threads)
    server = open_server(teacher_dir, host, port, api_key=api_key or None,
                         max_batch=max_batch, max_connections=max_connections)
    warning = exposure_warning(host, api_key)
    if warning:
        click.echo(warning, err=True)
    meta = server.metadata
    click.echo(f"serving teacher {meta['fingerprint']} ({meta['kind']}) at {server.url}; "
               "Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.shutdown()


@click.command("connect-teacher")
@click.option("--url", required=True, help="The teacher server: ws://HOST:PORT.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Remote teacher directory to write (teacher.json).")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait for one reply before giving up.")
@click.option("--retries", type=int, default=4, show_default=True,
              help="Reconnect attempts when the server is unreachable or drops.")
@click.option("--backoff", type=float, default=0.5, show_default=True,
              help="Seconds before the first reconnect, doubled for each next one.")
@click.option("--connect-timeout", type=float, default=10.0, show_default=True,
              help="Seconds for the handshake and metadata.")
@click.option("--api-key", envvar="RPD_API_KEY", show_envvar=True, default=None,
              help="The server's API key, if it has one. Not written to --out: the directory "
                   "records that a key is needed, and loading it reads RPD_API_KEY.")
@click.option("--force", is_flag=True, help="Replace a teacher already in --out.")
def connect_teacher_cmd(url: str, out: Path, timeout: float, retries: int, backoff: float,
                        connect_timeout: float, api_key: str | None, force: bool) -> None:
    """Write a teacher directory that uses the teacher served at --url.

    Use the directory as --teacher anywhere (rpd eval, cache, train).
    """
    from rpd.teachers.remote import write_remote_teacher

    teacher = write_remote_teacher(url, out, force=force, api_key=api_key or None,
                                   timeout=timeout, retries=retries, backoff=backoff,
                                   connect_timeout=connect_timeout)
    spec = teacher.spec
    click.echo(f"wrote remote teacher to {out}: {teacher.url} serves "
               f"{teacher.config.get('served_kind') or 'a teacher'} {teacher.fingerprint}, "
               f"camera {spec.camera.name} {spec.camera.width}x{spec.camera.height}, "
               f"chunk {spec.chunk_size}x{spec.action_dim}, tasks "
               f"{', '.join(spec.tasks) or 'none'}")

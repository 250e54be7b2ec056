"""The ``glmv`` argument parser: every command, its options and help text, and the option groups
the commands that run the model share (loading, generation, sampling)."""
from __future__ import annotations

import argparse

from runtime.app.cli.ask import cmd_ask, cmd_chat, cmd_console
from runtime.app.cli.models import cmd_convert, cmd_doctor, cmd_models, cmd_synth
from runtime.app.cli.inventory import cmd_inventory, cmd_read_plate_any
from runtime.app.cli.plate import cmd_demo
from runtime.app.cli.serve import cmd_check_winpe, cmd_self_test, cmd_serve


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 picks a free one)")
    return v


def _device(text: str) -> str:
    from runtime.engine.device_choice import DeviceRequest
    try:
        DeviceRequest.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _device_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument("--device", type=_device, default=None,
                   help="where the model runs: auto (default: a CUDA GPU, else a Vulkan GPU, else the CPU), cpu, "
                        "cuda, vulkan (a software Vulkan device such as llvmpipe only when asked this way), or "
                        "cuda:N / vulkan:N as `glmv doctor` lists them; also GLMV_DEVICE")


def _gpu_layers_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument("--gpu-layers", type=int, default=-1, metavar="N",
                   help="layers on the GPU (default: as many as its free memory holds; 0: none)")


def _pixel_budget_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument("--pixel-budget", type=int, default=None,
                   help="max pixels sent to the vision tower (default: the model's manifest, else 802816 ≈ "
                        "1024 image tokens; at most the model's own maximum, 4816896 ≈ 6144 tokens for GLM-4.6V)")


def _engine_args(q: argparse.ArgumentParser) -> None:
    """What loading the model and preparing the photo take (every command that runs the model)."""
    q.add_argument("--ctx", type=int, default=8192, help="context size in tokens (default 8192)")
    q.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    _device_arg(q)
    _gpu_layers_arg(q)
    _pixel_budget_arg(q)
    q.add_argument("--no-cache", action="store_true", help="do not reuse or store cached answers")
    q.add_argument("--verify", action="store_true", help="check sha256 against manifest.json first")
    q.add_argument("--data-dir", help="logs, caches, demo model (default: $GLMV_DATA_DIR or the user data folder)")


def _generation_args(q: argparse.ArgumentParser, *, think: bool = True, json_out: bool = True) -> None:
    from runtime.engine.sampling import DEFAULT_REASONING_BUDGET
    _engine_args(q)
    q.add_argument("--max-tokens", type=int, default=256, help="answer length limit in tokens (default 256; "
                                                                "reasoning has its own --think-budget)")
    q.add_argument("--no-jump-forward", dest="jump_forward", action="store_false",
                   help="sample every token of a JSON answer, even the text its schema forces (slower; the "
                        "answer is the same either way; also GLMV_JUMP_FORWARD=0)")
    if json_out:   # ask and chat stream their answer
        q.add_argument("--progress", dest="show_progress", choices=("auto", "bar", "lines", "off"), default="auto",
                       help="progress while the photo is read, on stderr: a bar on a terminal, plain lines "
                            "otherwise (auto; with --json and no terminal: off)")
    if think:
        q.add_argument("--think", action="store_true", help="let the model reason before answering (slower)")
        q.add_argument("--think-budget", type=int, default=DEFAULT_REASONING_BUDGET,
                       help=f"reasoning length limit in tokens (default {DEFAULT_REASONING_BUDGET}); at the limit the "
                            "reasoning is closed and the answer still comes")
    # sampling: the model's own settings (from its generation_config.json) unless overridden
    q.add_argument("--greedy", action="store_true",
                   help="always take the likeliest token (temperature 0; the repeat penalty still applies)")
    q.add_argument("--temperature", type=float, help="default: the model's own (0 = greedy)")
    q.add_argument("--top-p", type=float, help="default: the model's own (1 = off)")
    q.add_argument("--top-k", type=int, help="default: the model's own (0 = off)")
    q.add_argument("--repeat-penalty", type=float, help="transformers' repetition_penalty; default: the model's own")
    q.add_argument("--seed", type=int, help="sampling seed (default 0: the same question gives the same answer)")
    if json_out:
        q.add_argument("--json", action="store_true", help="machine-readable output (one JSON object per answer)")


def build_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``epilog`` is the text under --help's options (the package's own
    ``build_parser`` passes the command list and exit codes from runtime/app/cli/dispatch.py)."""
    ap = argparse.ArgumentParser(prog="glmv", description="GLM-4.6V-Flash, offline, through llama.cpp.",
                                 epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command")

    s = sub.add_parser("synth", help="make the synthetic GLM-4.6V checkpoint (Hugging Face layout)")
    s.add_argument("out")
    s.add_argument("--size", choices=("tiny", "medium", "full"), default="tiny")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dialect", choices=("v5", "v4", "release"), default="v5",
                   help="config.json style (transformers 5.x / 4.x / the real release's formats)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_synth)

    c = sub.add_parser("convert", help="Hugging Face GLM-4.6V checkpoint → text GGUF + mmproj GGUF")
    c.add_argument("src")
    c.add_argument("--out", required=True)
    c.add_argument("--quant", default="auto", help="F32 F16 BF16 Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0 IQ4_NL, or "
                   "auto (default): what `glmv doctor` recommends here — quality first: Q5_K_M where the RAM "
                   "holds it, else Q4_K_M (Q4_0 is faster on AVX2 CPUs but reads less exactly)")
    c.add_argument("--mmproj-quant", default="Q8_0", help="F32 F16 Q8_0 (default Q8_0)")
    c.add_argument("--name", help="base name of the output files (default: the source folder's name)")
    c.add_argument("--threads", type=int)
    c.add_argument("--force", action="store_true", help="rewrite files even when the manifest says they are done")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_convert)

    for name, fn, hlp in (("ask", cmd_ask, "answer one question about a photo (streams)"),
                          ("chat", cmd_chat, "multi-turn questions about one photo (stdin; --json for scripts)"),
                          ("console", cmd_console, "the console UI: asks for a photo, then questions (what "
                                                   "glmv.exe opens when its window cannot start)"),
                          ("demo", cmd_demo, "run the built-in demo model on a sample nameplate")):
        q = sub.add_parser(name, help=hlp)
        if name in ("ask", "chat"):
            q.add_argument("photo")
        if name == "console":
            q.add_argument("photo", nargs="?", help="the photo (asked for when not given)")
            q.add_argument("--why", help="what to say first (why the window did not open)")
        if name == "ask":
            q.add_argument("question")
        if name != "demo":
            q.add_argument("--model-dir", help="folder with the GGUF pair (default: $GLMV_MODEL_DIR, models/ beside "
                                               "the program, then the data folder)")
            _generation_args(q)
        else:   # the demo reads the sample plate greedily under the schema: nothing else to choose
            _engine_args(q)
        q.set_defaults(fn=fn)

    rp = sub.add_parser("read-plate", help="read a nameplate's fields (JSON schema enforced by llama.cpp's grammar)")
    rp.add_argument("photos", nargs="+", metavar="PHOTO")
    rp.add_argument("--model-dir")
    # no --think: the schema's grammar holds the answer to the JSON from its first token
    _generation_args(rp, think=False, json_out=False)
    fmt = rp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per photo")
    fmt.add_argument("--csv", action="store_true", help="CSV output (one row per photo)")
    fmt.add_argument("--stream", action="store_true",
                     help="JSON lines as the model reads: progress, each field when complete, speed and time "
                          "left, then the reading (one 'done' line per photo)")
    rp.add_argument("--progress", dest="show_progress", choices=("auto", "bar", "lines", "off"), default="auto",
                    help="progress on stderr while the photo is read and the fields are written: a bar on a "
                         "terminal, plain lines otherwise (auto; off with --json/--csv/--stream and no terminal)")
    rp.add_argument("--resume", action="store_true",
                    help="continue an interrupted run over a folder (a folder's photos go into the inventory the "
                         "window shows; photos already read are not read again)")
    rp.add_argument("--engine-url", metavar="URL",
                    help="read the folder on a remote OpenAI-compatible engine (vLLM, llama.cpp's server, glmv serve) "
                         "instead of this computer's model; its token from $GLMV_ENGINE_TOKEN (docs/remote-engine.md)")
    rp.add_argument("--engine-token-env", metavar="VAR", help="the environment variable holding the engine's "
                                                              "token (default GLMV_ENGINE_TOKEN; never on the command line)")
    rp.add_argument("--engine-model", metavar="NAME", help="the model name the engine serves (default: its first)")
    rp.add_argument("--concurrency", type=int, default=2, metavar="N",
                    help="photos in flight at once on the remote engine (default 2)")
    rp.set_defaults(fn=cmd_read_plate_any, max_tokens=2048)

    iv = sub.add_parser("inventory", help="the inventory (photos read in the window or by read-plate over a folder): "
                                          "list it, or export it")
    iv.add_argument("--data-dir")
    iv.add_argument("--csv", metavar="FILE", help="write the table as CSV (UTF-8 with BOM)")
    iv.add_argument("--xlsx", metavar="FILE", help="write the table as an Excel workbook (readings, corrections)")
    iv.add_argument("--folder", metavar="DIR", help="export everything (table, photos, JSON) into this new folder")
    iv.set_defaults(fn=cmd_inventory)

    m = sub.add_parser("models", help="GGUF pairs found, sizes, quant, verified or not")
    m.add_argument("--model-dir")
    m.add_argument("--data-dir")
    m.add_argument("--verify", action="store_true", help="check sha256 against manifest.json")
    m.add_argument("--json", action="store_true")
    m.set_defaults(fn=cmd_models)

    sv = sub.add_parser("serve", help="local HTTP server: web UI, app API, OpenAI-compatible /v1")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else "
                                                          "requires a bearer token, generated if not given)")
    sv.add_argument("--port", type=_port, default=0, help="port (default 0: a free port)")
    sv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on /api and /v1")
    sv.add_argument("--allow-host", action="append", metavar="NAME",
                    help="a host name clients may reach this server by (repeatable; e.g. the GPU box's DNS name when "
                         "inventories elsewhere send it photos); IP addresses are always accepted on --host 0.0.0.0")
    sv.add_argument("--model-dir")
    sv.add_argument("--data-dir")
    sv.add_argument("--no-window", action="store_true", help="do not open the desktop window (headless)")
    sv.add_argument("--ctx", type=int, default=8192, help="context size in tokens (default 8192)")
    sv.add_argument("--max-tokens", type=int, default=1024, help="answer length limit for the UI (default 1024)")
    sv.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    _device_arg(sv)
    sv.add_argument("--no-cache", action="store_true", help="do not reuse or store cached answers")
    sv.add_argument("--verify", action="store_true", help="check sha256 against manifest.json first")
    _pixel_budget_arg(sv)
    sv.set_defaults(fn=cmd_serve)

    st = sub.add_parser("self-test", help="offline end-to-end check on the built-in demo model (JSON report); "
                                          "also `glmv --self-test`")
    st.add_argument("--data-dir")
    st.set_defaults(fn=cmd_self_test)

    cw = sub.add_parser("check-winpe", help="Windows: are the system DLLs the bundle needs present (run it on a "
                                            "WinPE stick)? also `glmv-cli.exe --check-winpe`")
    cw.add_argument("--system32", help="the folder to look in (default %%SystemRoot%%\\System32)")
    cw.set_defaults(fn=cmd_check_winpe)

    d = sub.add_parser("doctor", help="CPU, chosen llama.cpp CPU variant, RAM, GPUs, models, recommended quant")
    d.add_argument("--model-dir")
    d.add_argument("--data-dir")
    _device_arg(d)
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_doctor)
    return ap

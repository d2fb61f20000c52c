"""Reference text generated from the code itself, for the site: the CLI's commands and the hooks."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import click


@dataclass
class Parameter:
    name: str
    kind: str
    """``argument`` or ``option``."""
    type: str
    default: str
    help: str


@dataclass
class Command:
    path: str
    """``papers site build``."""
    summary: str
    help_text: str
    """What ``--help`` prints, at a fixed width."""
    parameters: list[Parameter] = field(default_factory=list)


def cli_reference(width: int = 100) -> list[Command]:
    """Every command of ``papers.cli.cli``, groups walked depth first, with what ``--help`` says."""
    from papers.cli import cli

    commands: list[Command] = []
    root = click.Context(cli, info_name="papers", terminal_width=width, max_content_width=width)

    def walk(command: click.Command, context: click.Context) -> None:
        commands.append(_command(command, context))
        if isinstance(command, click.Group):
            for name in command.list_commands(context):
                child = command.get_command(context, name)
                if child is None or child.hidden:
                    continue
                walk(child, click.Context(child, info_name=name, parent=context))

    walk(cli, root)
    return commands


def _command(command: click.Command, context: click.Context) -> Command:
    parameters = []
    for param in command.get_params(context):
        if param.hidden if isinstance(param, click.Option) else False:
            continue
        is_option = isinstance(param, click.Option)
        default = param.default if not callable(param.default) else None
        if type(default).__name__ == "Sentinel":  # click ≥ 8.3 marks "no default" with Sentinel.UNSET
            default = None
        shown_default = "" if default in (None, False, ()) or (is_option and param.is_flag) else str(default)
        parameters.append(
            Parameter(
                name=", ".join([*param.opts, *param.secondary_opts])
                if is_option
                else param.human_readable_name,
                kind="option" if is_option else "argument",
                type="flag" if is_option and param.is_flag else param.type.name,
                default=shown_default,
                help=(param.help or "") if is_option else "",
            )
        )
    return Command(
        path=context.command_path,
        summary=command.get_short_help_str(limit=100),
        help_text=command.get_help(context),
        parameters=parameters,
    )


@dataclass
class Hook:
    name: str
    signature: str
    doc: str


def hook_reference() -> list[Hook]:
    """The hook specs a plugin may implement, with their docstrings, in the order they are written."""
    from papers import hookspecs

    hooks = []
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("papers_"):
            continue
        hooks.append(
            Hook(
                name=name,
                signature=f"{name}{inspect.signature(function)}".replace("'", ""),
                doc=inspect.cleandoc(function.__doc__ or ""),
            )
        )
    return sorted(hooks, key=lambda hook: inspect.getsourcelines(getattr(hookspecs, hook.name))[1])

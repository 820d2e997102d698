from .cli.console import console

console()

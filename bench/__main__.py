from bench.sfu import cli

cli()

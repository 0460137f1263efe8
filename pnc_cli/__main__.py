from pnc_cli.cli import main

main()

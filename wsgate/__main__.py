from wsgate.cli.fast import main

main()

from wsgate.cli_fast import main

main()

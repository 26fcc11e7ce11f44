from arcli.cli import main

main()

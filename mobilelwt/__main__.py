from mobilelwt.cli import main

main()

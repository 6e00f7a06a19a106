from mobilelwt.app.cli import main

main()
